package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/preflight"
)

const checkUsage = `usage: broker check -c FILE

Validate FILE and every service definition it references, then print the resolved plan:
broker settings with their source, and each service with its socket path after defaults.
Then make the checks ` + "`broker run`" + ` makes before it serves anything (directories, socket
paths, definitions, launch binaries). Exit 0 when run would start, 1 naming the path and
the reason of every problem, 2 on a usage error. A socket a running broker serves is a
note, not a problem: ` + "`broker reload`" + ` applies the file to that broker.
`

// runCheck is `broker check`: like `nginx -t`, it starts nothing.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return check(ctx, args, stdout, stderr, config.LoadOptions{})
}

// check is runCheck with the config's outside inputs injectable for tests.
func check(ctx context.Context, args []string, stdout, stderr io.Writer, lo config.LoadOptions) int {
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
	printServicedefs(stdout, cfg)
	problems := 0
	fmt.Fprintln(stdout, "\nstart-up checks (as `broker run` makes them)")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, c := range startChecks(ctx, cfg) {
		switch {
		case c.Err != nil:
			problems++
			fmt.Fprintf(tw, "  %s\tPROBLEM (below)\n", c.What)
			fmt.Fprintf(stderr, "%s: %v\n", c.What, c.Err)
		case c.note != "":
			fmt.Fprintf(tw, "  %s\tnote: %s\n", c.What, c.note)
		default:
			fmt.Fprintf(tw, "  %s\tok: %s\n", c.What, c.Path)
		}
	}
	tw.Flush()
	if problems > 0 {
		fmt.Fprintf(stderr, "%s: %d problem(s); `broker run` would refuse to start\n", path, problems)
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

// printServicedefs lists the definitions the services reference (preflight.Servicedefs):
// the named ones, and every file in the directory when a "*" service serves them all. A
// missing definition is not an error: the directory is watched, so it can be installed
// while the broker runs. Problems are reported with the start-up checks.
func printServicedefs(w io.Writer, cfg *config.Config) {
	dir := cfg.Broker.ServicedefDir
	fmt.Fprintf(w, "\nservicedefs in %s\n", dir)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(w, "  (directory missing: the broker creates it, mode 0700, at start)\n")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	for _, d := range preflight.Servicedefs(cfg) {
		switch {
		case d.Ignored:
			fmt.Fprintf(tw, "  %s\tignored, the name is not <service>%s\n", d.Name, servicedef.Ext)
		case d.Missing && !d.Launch:
			fmt.Fprintf(tw, "  %s\tnot installed: optional for a registered service (no version policy)\n", d.Name)
		case d.Missing:
			fmt.Fprintf(tw, "  %s\tnot installed: Hellos for it get SERVICE_UNKNOWN until %s exists\n", d.Name, d.Path)
		case d.Err != nil:
			fmt.Fprintf(tw, "  %s\tINVALID (below)\n", d.Name)
		case d.Launch:
			fmt.Fprintf(tw, "  %s\tok: %s, binary %s\n", d.Name, d.Def.GetIsolation(), d.Binary)
		default:
			fmt.Fprintf(tw, "  %s\tok: %s\n", d.Name, d.Def.GetIsolation())
		}
	}
}
