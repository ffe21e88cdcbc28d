package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rpbroker/broker/config"
)

// streams is the stderr that dispatch hands every command. It writes to stderr and also
// carries stdout, so that a FlagSet made from it prints help on stdout (help is the
// output asked for, not a diagnostic). With probe set, the command is only being
// described: newFlagSet records its FlagSet there and parseArgs ends the command before
// it does anything, which is how help and completion learn every command's flags from
// the code that parses them.
type streams struct {
	io.Writer // stderr
	stdout    io.Writer
	probe     *probe
}

// probe receives the FlagSet and usage of a command run in describe-only mode.
type probe struct {
	fs    *flag.FlagSet
	usage string
}

// withStdout makes a command's stderr carry stdout for help, when dispatch has not
// already (a command called directly, as tests do).
func withStdout(stderr, stdout io.Writer) io.Writer {
	if _, ok := stderr.(*streams); ok {
		return stderr
	}
	return &streams{Writer: stderr, stdout: stdout}
}

// flagOut is a FlagSet's output. The flag package's own messages are dropped: parseArgs
// reports a bad flag in one line, and help is printed by printHelp.
type flagOut struct {
	name, usage string
	stderr      io.Writer
	help        io.Writer
	probing     bool
}

func (*flagOut) Write(p []byte) (int, error) { return len(p), nil }

// newFlagSet returns a FlagSet that reports errors instead of exiting. usage is the
// synopsis after "broker NAME", optionally followed by lines of description.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("broker "+name, flag.ContinueOnError)
	out := &flagOut{name: name, usage: usage, stderr: stderr, help: stderr}
	if s, ok := stderr.(*streams); ok {
		out.help = s.stdout
		if s.probe != nil {
			s.probe.fs, s.probe.usage, out.probing = fs, usage, true
		}
	}
	fs.SetOutput(out)
	fs.Usage = func() {}
	return fs
}

// printHelp prints a command's synopsis, description and flags.
func printHelp(w io.Writer, name, usage string, fs *flag.FlagSet) {
	synopsis, desc, _ := strings.Cut(strings.TrimRight(usage, "\n"), "\n")
	fmt.Fprintf(w, "usage: broker %s %s\n", name, synopsis)
	if desc = strings.Trim(desc, "\n"); desc != "" {
		fmt.Fprintf(w, "\n%s\n", desc)
	}
	if fs == nil {
		return
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprint(w, "\nflags:\n")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// usageError prints a one-line usage error for a command and returns exitUsage.
func usageError(stderr io.Writer, name, usage string, format string, a ...any) int {
	synopsis, _, _ := strings.Cut(usage, "\n")
	fmt.Fprintf(stderr, "broker %s: %s (usage: broker %s %s; see broker help %s)\n",
		name, fmt.Sprintf(format, a...), name, strings.TrimSpace(synopsis), name)
	return exitUsage
}

// parseArgs parses flags that may stand before, between or after positional arguments
// (`broker admin status --json`). It returns the positionals, and an exit code when
// parsing ended the command (help: 0, bad usage: 2).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	out, _ := fs.Output().(*flagOut)
	if out != nil && out.probing {
		return nil, exitOK, false
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if out == nil {
				return nil, exitUsage, false
			}
			if errors.Is(err, flag.ErrHelp) {
				printHelp(out.help, out.name, out.usage, fs)
				return nil, exitOK, false
			}
			return nil, usageError(out.stderr, out.name, out.usage, "%v", err), false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, 0, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), 0, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig loads a broker.toml with the process environment.
func loadConfig(path string) (*config.Config, error) {
	return config.Load(path, config.LoadOptions{Environ: os.Environ()})
}

// socketFor resolves the control socket of one service from a config file: the service
// of that name, else the "*" service that serves every servicedef; "" picks the first.
func socketFor(cfgPath, service string) (string, error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return "", err
	}
	any := ""
	for _, s := range cfg.Services {
		if service == "" || s.Name == service {
			return s.Socket, nil
		}
		if s.Name == config.AnyService {
			any = s.Socket
		}
	}
	if any != "" {
		return any, nil
	}
	return "", fmt.Errorf("%s: no [[service]] named %q and no \"*\" service", cfgPath, service)
}
