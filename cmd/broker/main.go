// Command broker supervises local IPC services speaking the running-process broker v1
// protocol. See README.md for the walk-through and `broker --help` for the commands.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(start(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes shared by every command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// command is one entry of the table the CLI dispatches on; help, the positional-argument
// check and shell completion are all derived from it, so they cannot drift apart.
type command struct {
	name    string
	summary string
	// maxArgs bounds the positional arguments; -1 allows any number. One more is a usage
	// error, reported before the command runs.
	maxArgs int
	// words lists what a positional argument may be (admin verbs, shells), for completion.
	words func() []string
	// run must do nothing before parseArgs returns: help and completion call it in
	// describe-only mode (see streams) to read its flags.
	run runFunc
	// sub makes the command a group: its first argument names one of these.
	sub func() []command
	// help is printed after a group's list of subcommands.
	help string
}

func commands() []command {
	return []command{
		{name: "run", summary: "run the supervisor in the foreground (default when -c is given)", run: runRun},
		{name: "check", summary: "validate the config and its servicedefs, print the resolved plan", run: runCheck},
		{name: "reload", summary: "ask the running broker to reload its config and print the plan it applied", run: runReload},
		{name: "upgrade", summary: "replace the running broker's binary in place: same pid, sockets and backends", run: runUpgrade},
		{name: "admin", summary: "send one admin verb to a control socket", maxArgs: 1, run: runAdmin,
			words: func() []string { return strings.Split(adminVerbs, ", ") }},
		{name: "hello", summary: "send one Hello and print Negotiated or the refusal", maxArgs: 2, run: runHello},
		{name: "status", summary: "show every service of the running broker, its backends and counters", run: runStatus},
		{name: "events", summary: "print the lifecycle event log, one line per event; -f follows it", run: runEvents},
		servicedefCommand(),
		{name: "doctor", summary: "read-only checks of dirs, modes, sockets, servicedefs and backends", run: runDoctor},
		{name: "version", summary: "print the broker, protocol and framing versions", run: runVersion},
		{name: "completion", summary: "print a shell completion script (bash, zsh or fish)", maxArgs: 1, run: runCompletion,
			words: func() []string { return completionShells }},
		{name: "help", summary: "describe a command: broker help COMMAND (same as COMMAND --help)", maxArgs: -1,
			words: func() []string { return commandNames(commands()) }},
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch a := args[0]; {
	case isHelpFlag(a):
		usage(stdout)
		return exitOK
	case a == "--version" || a == "-version":
		return runCommand(ctx, findCommand(commands(), "version"), "version", args[1:], stdout, stderr)
	case a == "help":
		return runHelp(ctx, args[1:], stdout, stderr)
	case a == "-c" || a == "--config" || a == "-config" ||
		strings.HasPrefix(a, "-c=") || strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
		return runCommand(ctx, findCommand(commands(), "run"), "run", args, stdout, stderr)
	}
	c := findCommand(commands(), args[0])
	if c == nil {
		fmt.Fprintf(stderr, "broker: unknown command %q; run `broker --help` for the list\n", args[0])
		return exitUsage
	}
	return runCommand(ctx, c, c.name, args[1:], stdout, stderr)
}

// runCommand checks the command line against the command's own flags and positional
// bound, answers --help on stdout, and only then runs the command. path is the full
// name ("servicedef encode").
func runCommand(ctx context.Context, c *command, path string, args []string, stdout, stderr io.Writer) int {
	if c.sub != nil {
		return runGroup(ctx, c, path, args, stdout, stderr)
	}
	fs, usage := describe(ctx, c)
	if fs != nil {
		fs.SetOutput(&flagOut{name: path, usage: usage, stderr: stderr, help: stdout})
		pos, code, ok := parseArgs(fs, args)
		if !ok {
			return code
		}
		if c.maxArgs >= 0 && len(pos) > c.maxArgs {
			return usageError(stderr, path, usage, "unexpected argument %q", pos[c.maxArgs])
		}
	}
	return c.run(ctx, args, stdout, &streams{Writer: stderr, stdout: stdout})
}

func runGroup(ctx context.Context, c *command, path string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		groupUsage(stderr, c, path)
		return exitUsage
	}
	if isHelpFlag(args[0]) {
		groupUsage(stdout, c, path)
		return exitOK
	}
	sub := findCommand(c.sub(), args[0])
	if sub == nil {
		fmt.Fprintf(stderr, "broker %s: unknown subcommand %q; want one of: %s\n", path, args[0], strings.Join(commandNames(c.sub()), ", "))
		return exitUsage
	}
	return runCommand(ctx, sub, path+" "+sub.name, args[1:], stdout, stderr)
}

// runHelp is `broker help [COMMAND [SUBCOMMAND]]`: the same text as COMMAND --help.
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return exitOK
	}
	cmds, path := commands(), ""
	for i, name := range args {
		c := findCommand(cmds, name)
		if c == nil {
			fmt.Fprintf(stderr, "broker help: unknown command %q; run `broker --help` for the list\n", strings.TrimSpace(path+" "+name))
			return exitUsage
		}
		path = strings.TrimSpace(path + " " + c.name)
		switch {
		case c.sub != nil && i+1 < len(args):
			cmds = c.sub()
		case i+1 < len(args):
			return usageError(stderr, "help", "[COMMAND [SUBCOMMAND]]", "unexpected argument %q", args[i+1])
		case c.sub != nil:
			groupUsage(stdout, c, path)
			return exitOK
		case c.run == nil: // help itself
			usage(stdout)
			return exitOK
		default:
			fs, u := describe(ctx, c)
			if fs == nil { // a command that parses its own flags answers --help itself
				return c.run(ctx, []string{"--help"}, stdout, &streams{Writer: stderr, stdout: stdout})
			}
			printHelp(stdout, path, u, fs)
			return exitOK
		}
	}
	return exitOK
}

// describe runs the command in describe-only mode (see streams) and returns its flags and
// usage; nil when the command does not build its flags with newFlagSet.
func describe(ctx context.Context, c *command) (*flag.FlagSet, string) {
	if c.run == nil {
		return nil, ""
	}
	p := &probe{}
	c.run(ctx, nil, io.Discard, &streams{Writer: io.Discard, stdout: io.Discard, probe: p})
	return p.fs, p.usage
}

func findCommand(cmds []command, name string) *command {
	for i := range cmds {
		if cmds[i].name == name {
			return &cmds[i]
		}
	}
	return nil
}

func commandNames(cmds []command) []string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	return names
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: broker -c FILE | broker COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n`broker help COMMAND` (or `broker COMMAND --help`) describes a command's flags.\n"+
		"`broker --version` prints the version. Exit codes: 0 ok, 1 failure, 2 usage.\n")
}

func groupUsage(w io.Writer, c *command, path string) {
	fmt.Fprintf(w, "usage: broker %s SUBCOMMAND [flags]\n\nsubcommands:\n", path)
	for _, s := range c.sub() {
		fmt.Fprintf(w, "  %-9s %s\n", s.name, s.summary)
	}
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.Trim(c.help, "\n"))
	}
	fmt.Fprintf(w, "\n`broker help %s SUBCOMMAND` describes its flags.\n", path)
}
