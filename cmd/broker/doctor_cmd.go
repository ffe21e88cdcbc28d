package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/preflight"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// doctor collects findings; a problem makes the command exit 1, a note does not.
type doctor struct {
	w        io.Writer
	problems int
}

func (d *doctor) ok(what, format string, a ...any) {
	fmt.Fprintf(d.w, "ok       %-28s %s\n", what, fmt.Sprintf(format, a...))
}

func (d *doctor) note(what, format string, a ...any) {
	fmt.Fprintf(d.w, "note     %-28s %s\n", what, fmt.Sprintf(format, a...))
}

func (d *doctor) problem(what, format string, a ...any) {
	d.problems++
	fmt.Fprintf(d.w, "PROBLEM  %-28s %s\n", what, fmt.Sprintf(format, a...))
}

// runDoctor makes read-only checks of the environment: directories and modes, stale
// sockets, servicedef parse results, path lengths and reachability. It changes nothing.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("doctor", "[-c FILE]", stderr)
	cfgPath := fs.String("c", "", "broker.toml to check against (optional)")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	d := &doctor{w: stdout}
	runtimeDir, defDir := "", servicedef.DefaultDir(os.Getenv, os.Getenv("HOME"))
	var cfg *config.Config
	if *cfgPath != "" {
		c, err := loadConfig(*cfgPath)
		if err != nil {
			d.problem("config", "%v", err)
		} else {
			cfg = c
			d.ok("config", "%s is valid (%d services)", *cfgPath, len(c.Services))
			runtimeDir, defDir = c.Broker.RuntimeDir, c.Broker.ServicedefDir
		}
	}
	if os.Geteuid() == 0 {
		d.note("user", "running as root: launched backends would run as root too")
	}
	layout, err := names.DefaultLayout(runtimeDir)
	if err != nil {
		d.problem("machine id", "%v: default socket paths cannot be derived", err)
	} else {
		d.ok("user hash", "%s (uid %d)", layout.SID, os.Geteuid())
		runtimeDir = layout.Dir
	}
	if cfg != nil {
		d.startChecks(ctx, cfg)
	} else {
		d.checkDir("runtime dir", runtimeDir)
		d.checkServicedefs(defDir)
	}
	d.checkSockets(ctx, runtimeDir)
	if cfg != nil {
		d.checkServices(ctx, cfg)
	}
	if d.problems > 0 {
		fmt.Fprintf(stdout, "\n%d problem(s)\n", d.problems)
		return exitFailure
	}
	fmt.Fprintln(stdout, "\nno problems found")
	return exitOK
}

// startChecks reports the checks `broker run` makes before serving (startChecks): the
// same functions, so doctor finds a problem exactly when run would refuse to start.
func (d *doctor) startChecks(ctx context.Context, cfg *config.Config) {
	checked := map[string]bool{}
	for _, c := range startChecks(ctx, cfg) {
		checked[c.Path] = true
		switch {
		case c.Err != nil:
			d.problem(c.What, "%v", c.Err)
		case c.note != "":
			d.note(c.What, "%s", c.note)
		default:
			d.ok(c.What, "%s", c.Path)
		}
	}
	// Definitions no service of this config uses cannot stop it; they are worth a note.
	files, _ := filepath.Glob(filepath.Join(cfg.Broker.ServicedefDir, "*"+servicedef.Ext))
	for _, f := range files {
		if _, err := servicedef.Load(f); err != nil && !checked[f] {
			d.note("servicedef "+filepath.Base(f), "unused by this config, and invalid: %v", err)
		}
	}
}

// checkDir checks the runtime dir when doctor has no config: as run would (preflight.Dir).
func (d *doctor) checkDir(what, dir string) {
	_, statErr := os.Lstat(dir)
	switch err := preflight.Dir(dir, dir); {
	case err != nil:
		d.problem(what, "%v", err)
	case errors.Is(statErr, fs.ErrNotExist):
		d.note(what, "%s does not exist yet; the broker creates it 0700", dir)
	default:
		d.ok(what, "%s", dir)
	}
}

func (d *doctor) checkServicedefs(dir string) {
	if err := servicedef.CheckDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			d.note("servicedef dir", "%s does not exist yet; the broker creates it 0700", dir)
		} else {
			d.problem("servicedef dir", "%v", err)
		}
		return
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+servicedef.Ext))
	d.ok("servicedef dir", "%s: %d definition file(s)", dir, len(files))
	for _, f := range files {
		def, err := servicedef.Load(f)
		if err != nil {
			d.problem("servicedef "+filepath.Base(f), "%v", err)
			continue
		}
		d.ok("servicedef "+def.ServiceName, "%s, binary %s", def.Isolation, def.BinaryPath)
	}
}

// checkSockets reports control and backend sockets in the runtime dir that nobody
// answers on: a crashed broker leaves them, and the broker reclaims them on start.
func (d *doctor) checkSockets(ctx context.Context, dir string) {
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	for _, s := range socks {
		if err := names.CheckSocketPath(s); err != nil {
			d.problem("socket path", "%v", err)
		}
		c, err := (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext(ctx, "unix", s)
		if err != nil {
			d.note("stale socket", "%s: nobody answers (%v); the broker reclaims it on start", filepath.Base(s), errors.Unwrap(err))
			continue
		}
		c.Close()
	}
}

func (d *doctor) checkServices(ctx context.Context, cfg *config.Config) {
	for _, s := range cfg.Services {
		what := "service " + s.Name
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		reply, err := client.Admin(cctx, s.Socket, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_READYZ})
		cancel()
		switch {
		case err != nil:
			d.note(what, "broker not reachable on %s (%v)", s.Socket, rootCause(err))
		default:
			d.ok(what, "broker answers on %s: %s", s.Socket, strings.TrimSpace(reply.Body))
		}
		if s.Mode != config.ModeRegistered {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		var perr error
		if s.Verify == config.VerifyConnect {
			_, perr = identity.CheckConnect(pctx, s.BackendEndpoint)
		} else {
			_, perr = identity.ProbeAndVerify(pctx, s.BackendEndpoint, &identity.Hasher{}, 0)
		}
		cancel()
		if perr != nil {
			d.problem(what+" backend", "%s: %v", s.BackendEndpoint, perr)
		} else {
			d.ok(what+" backend", "%s verified (%s)", s.BackendEndpoint, s.Verify)
		}
	}
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
