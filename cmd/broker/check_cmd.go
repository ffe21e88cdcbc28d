package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/names"
)

const checkUsage = `usage: broker check -c FILE

Validate FILE and every service definition it references, then print the resolved plan:
broker settings with their source, and each service with its socket path after defaults.
Exit 0 when everything is valid, 1 on any error, 2 on a usage error.
`

// runCheck is `broker check`: like `nginx -t`, it starts nothing.
func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) int {
	return check(args, stdout, stderr, config.LoadOptions{})
}

// check is runCheck with the config's outside inputs injectable for tests.
func check(args []string, stdout, stderr io.Writer, lo config.LoadOptions) int {
	fl := newFlagSet("check", strings.TrimPrefix(checkUsage, "usage: broker check "), withStdout(stderr, stdout))
	var path string
	fl.StringVar(&path, "c", "", "config file")
	fl.StringVar(&path, "config", "", "config file")
	pos, code, ok := parseArgs(fl, args)
	if !ok {
		return code
	}
	if path == "" || len(pos) > 0 {
		fmt.Fprint(stderr, "broker check: want exactly -c FILE\n"+checkUsage)
		return exitUsage
	}

	cfg, err := config.Load(path, lo)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n%s: invalid, nothing would start\n", err, path)
		return exitFailure
	}
	printPlan(stdout, cfg)
	problems := checkServicedefs(stdout, cfg)
	for _, p := range problems {
		fmt.Fprintln(stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "%s: %d servicedef problem(s)\n", path, len(problems))
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return exitOK
}

func printPlan(w io.Writer, cfg *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	b := cfg.Broker
	fmt.Fprintf(tw, "config\t%s\n\n[broker]\n", cfg.Path)
	for _, kv := range [][2]string{
		{"servicedef_dir", b.ServicedefDir},
		{"runtime_dir", b.RuntimeDir},
		{"event_log", b.EventLog},
		{"log_format", b.LogFormat},
		{"log_level", b.LogLevel},
		{"hello_timeout", b.HelloTimeout.String()},
		{"hello_rate_limit", fmt.Sprint(b.HelloRateLimit)},
		{"shutdown_grace", b.ShutdownGrace.String()},
	} {
		fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", kv[0], kv[1], cfg.Sources[kv[0]])
	}
	for i, s := range cfg.Services {
		fmt.Fprintf(tw, "\n[[service]] %d\n  name\t%s\n  mode\t%s\n  socket\t%s\n", i+1, s.Name, s.Mode, s.Socket)
		if s.Mode == config.ModeRegistered {
			fmt.Fprintf(tw, "  version\t%s\n  backend_endpoint\t%s\n  verify\t%s\n", s.Version, s.BackendEndpoint, s.Verify)
		} else {
			idle := s.IdleTimeout.String()
			if s.IdleTimeout == 0 {
				idle = "0 (never)"
			}
			fmt.Fprintf(tw, "  idle_timeout\t%s\n  start_timeout\t%s\n", idle, s.StartTimeout)
		}
		handoff := s.HandoffEndpoint
		if handoff == "" {
			handoff = "(off)"
		}
		fmt.Fprintf(tw, "  handoff_endpoint\t%s\n  max_connections\t%d\n", handoff, s.MaxConnections)
	}
	tw.Flush()
}

// checkServicedefs decodes and validates the definitions the services reference: the
// named ones, and every file in the directory when a "*" service serves them all. It
// prints one line per definition and returns the problems. A missing definition is not an
// error: the directory is watched, so it can be installed while the broker runs.
func checkServicedefs(w io.Writer, cfg *config.Config) []string {
	dir := cfg.Broker.ServicedefDir
	fmt.Fprintf(w, "\nservicedefs in %s\n", dir)
	switch err := servicedef.CheckDir(dir); {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(w, "  (directory missing: the broker creates it, mode 0700, at start)\n")
	case err != nil:
		return []string{err.Error()}
	}
	launched := map[string]bool{} // every referenced service -> some launch service serves it
	for _, s := range cfg.Services {
		if s.Name != config.AnyService {
			launched[s.Name] = launched[s.Name] || s.Mode == config.ModeLaunch
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, "*"+servicedef.Ext))
		if err != nil {
			return []string{fmt.Sprintf("servicedef dir %s: %v", dir, err)}
		}
		for _, f := range files {
			if stem := servicedef.Stem(f); names.ValidService(stem) {
				launched[stem] = true
			} else {
				fmt.Fprintf(w, "  %s: ignored, the name is not <service>%s\n", filepath.Base(f), servicedef.Ext)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(launched)) {
		p := filepath.Join(dir, name+servicedef.Ext)
		def, err := servicedef.Load(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && !launched[name]:
			fmt.Fprintf(tw, "  %s\tnot installed: optional for a registered service (no version policy)\n", name)
			continue
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(tw, "  %s\tnot installed: Hellos for it get SERVICE_UNKNOWN until %s exists\n", name, p)
			continue
		case err != nil:
			problems = append(problems, err.Error())
			fmt.Fprintf(tw, "  %s\tINVALID (below)\n", name)
			continue
		}
		note := ""
		if launched[name] && def.GetPerVersionBinaryDir() == "" {
			note = "; note: launch mode needs per_version_binary_dir, spawns will fail"
		}
		fmt.Fprintf(tw, "  %s\tok: %s, binary %s%s\n", name, def.GetIsolation(), def.GetBinaryPath(), note)
	}
	return problems
}
