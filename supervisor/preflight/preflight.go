package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Problem is one reason the config as written cannot be served. What names the part of
// the config it is about ("runtime_dir", `service "echo"`, `servicedef "zc"`).
type Problem struct {
	What string
	Err  error
}

func (p Problem) Error() string { return p.What + ": " + p.Err.Error() }
func (p Problem) Unwrap() error { return p.Err }

// Item is one start-up check and its outcome: Err is nil when it passed.
type Item struct {
	What string // "runtime_dir", "servicedef_dir", `service "echo"`, `servicedef "zc"`
	Path string // the directory, socket or file checked
	Err  error
	// Warning marks an Err that does not stop the start: a bad definition found in the
	// directory a "*" service serves costs only that service's Hellos (refused until the
	// file is fixed, as when it goes bad while the broker runs), not every other service.
	Warning bool
}

// Options tune Check.
type Options struct {
	// Inherited sockets (socket activation) are already bound: their paths are not checked.
	Inherited func(path string) bool
}

// Check runs every start-up check on cfg and returns the problems, in config order. It
// changes nothing on disk; run creates the directories it allows only once Check passed.
func Check(cfg *config.Config, o Options) []Problem {
	var out []Problem
	for _, it := range Items(cfg, o) {
		if it.Err != nil && !it.Warning {
			out = append(out, Problem{What: it.What, Err: it.Err})
		}
	}
	return out
}

// Items runs every start-up check on cfg and returns each one with its outcome, for
// tools that also show what passed (doctor).
func Items(cfg *config.Config, o Options) []Item {
	b := cfg.Broker
	out := []Item{
		{What: "runtime_dir", Path: b.RuntimeDir, Err: Dir(b.RuntimeDir, b.RuntimeDir)},
		// The servicedef dir is the broker's own, named in the config like runtime_dir.
		{What: "servicedef_dir", Path: b.ServicedefDir, Err: servicedefDir(b.ServicedefDir)},
	}
	for _, svc := range cfg.Services {
		if o.Inherited != nil && o.Inherited(svc.Socket) {
			continue
		}
		out = append(out, Item{What: fmt.Sprintf("service %q", svc.Name), Path: svc.Socket, Err: Socket(svc.Socket, b.RuntimeDir)})
	}
	for _, d := range Servicedefs(cfg) {
		if !d.Missing && !d.Ignored {
			out = append(out, Item{What: fmt.Sprintf("servicedef %q", d.Name), Path: d.Path, Err: d.Err, Warning: d.Wildcard && d.Err != nil})
		}
	}
	return out
}

// Socket checks a control socket path: its directory and the path itself.
func Socket(path, runtimeDir string) error {
	if err := names.CheckSocketPath(path); err != nil {
		return err
	}
	if err := Dir(filepath.Dir(path), runtimeDir); err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	_, err := SocketFree(path)
	return err
}

func servicedefDir(dir string) error {
	err := servicedef.CheckDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Creatable(dir, dir)
	}
	return err
}

// Def is one service definition a config references, as the broker will load it.
type Def struct {
	Name    string
	Path    string
	Launch  bool // some launch service serves it, so its binary must resolve
	Missing bool // not installed (not a problem: the directory is watched)
	Ignored bool // a file in the directory whose name is not <service>.servicedef
	// Wildcard: only a "*" service reaches it (no service is named after it).
	Wildcard bool
	Def      *wirepb.ServiceDefinition
	Binary   string // the resolved launch binary
	Err      error  // the definition is unusable: it does not decode or validate, or its binary does not resolve
}

// Servicedefs loads the definitions cfg references: the one named by each service, and
// every file in the directory when a "*" service serves them all. A missing one is not an
// error: the directory is watched, so it can be installed while the broker runs.
func Servicedefs(cfg *config.Config) []Def {
	dir := cfg.Broker.ServicedefDir
	launched := map[string]bool{} // referenced service -> some launch service serves it
	named := map[string]bool{}    // services the config names
	var ignored []Def
	for _, s := range cfg.Services {
		if s.Name != config.AnyService {
			launched[s.Name] = launched[s.Name] || s.Mode == config.ModeLaunch
			named[s.Name] = true
			continue
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*"+servicedef.Ext))
		for _, f := range files {
			if stem := servicedef.Stem(f); names.ValidService(stem) {
				launched[stem] = true
			} else {
				ignored = append(ignored, Def{Name: filepath.Base(f), Path: f, Ignored: true})
			}
		}
	}
	out := ignored
	for _, name := range slices.Sorted(maps.Keys(launched)) {
		d := Def{Name: name, Path: filepath.Join(dir, name+servicedef.Ext), Launch: launched[name], Wildcard: !named[name]}
		def, err := servicedef.Load(d.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			d.Missing = true
		case err != nil:
			d.Err = err
		default:
			d.Def = def
			if d.Launch {
				d.Binary, d.Err = Binary(def)
			}
		}
		out = append(out, d)
	}
	return out
}
