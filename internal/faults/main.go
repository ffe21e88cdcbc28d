// Command faults reproduces the fault campaign of issue 10 against a built broker binary
// and prints one line per fault with its figure:
//
//	go build -o /tmp/broker ./cmd/broker
//	go run ./internal/faults -broker /tmp/broker [-only over-cap] [-v]
//
// Every fault starts its own broker as a child process in a private temp dir (its own
// broker.toml, servicedef dir and runtime dir), talks to it only over Unix sockets in that
// dir, is bounded in time and count, and removes the dir when done. The backends it needs
// are this program itself, copied into the definition's binary dir: started by a broker,
// it serves as a backend whose behaviour is picked by its file name.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// fault is one reproduction: it returns the figures of its output line.
type fault struct {
	name string
	run  func(ctx context.Context, env *runEnv) (string, error)
}

// allFaults in the order they run (issue 10 items 1, 2, 4, 5, 6).
func allFaults() []fault {
	return []fault{
		{"oversize-frame", oversizeFrame},
		{"fd-exhaustion", fdExhaustion},
		{"crash-loop", crashLoop},
		{"removed-service", removedService},
		{"over-cap", overCap},
	}
}

// runEnv is what every fault gets: the broker under test and where to copy backends from.
type runEnv struct {
	broker  string // absolute path of the broker binary
	self    string // this program's executable, copied in as a launched backend
	verbose bool
	stderr  io.Writer
}

func main() {
	if role, ok := backendRole(); ok {
		os.Exit(serveBackend(role))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses flags and runs the selected faults; exit 0 when every fault produced its
// figure, 1 when one could not be set up or measured, 2 on usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokerPath := fs.String("broker", "", "path of the built broker binary (required)")
	only := fs.String("only", "", "run only this fault: oversize-frame, fd-exhaustion, crash-loop, removed-service, over-cap")
	verbose := fs.Bool("v", false, "echo each broker's log on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *brokerPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: faults -broker PATH [-only NAME] [-v]")
		return 2
	}
	env, err := newRunEnv(*brokerPath, *verbose, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "faults: %v\n", err)
		return 2
	}
	selected := 0
	code := 0
	for _, f := range allFaults() {
		if *only != "" && f.name != *only {
			continue
		}
		selected++
		if ctx.Err() != nil {
			return 1
		}
		start := time.Now()
		figures, err := f.run(ctx, env)
		if err != nil {
			fmt.Fprintf(stdout, "fault %-16s error=%q\n", f.name, err.Error())
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "fault %-16s %s\n", f.name, figures)
		if *verbose {
			fmt.Fprintf(stderr, "  [%s took %.1fs]\n", f.name, time.Since(start).Seconds())
		}
	}
	if selected == 0 {
		fmt.Fprintf(stderr, "faults: unknown fault %q\n", *only)
		return 2
	}
	return code
}

func newRunEnv(brokerPath string, verbose bool, stderr io.Writer) (*runEnv, error) {
	fi, err := os.Stat(brokerPath)
	if err != nil {
		return nil, fmt.Errorf("-broker: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("-broker %s is not an executable file", brokerPath)
	}
	abs, err := filepath.Abs(brokerPath)
	if err != nil {
		return nil, fmt.Errorf("-broker: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return &runEnv{broker: abs, self: self, verbose: verbose, stderr: stderr}, nil
}
