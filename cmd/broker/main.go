// Command broker supervises local IPC services speaking the running-process broker v1
// protocol. See README.md for the walk-through and `broker --help` for the commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes shared by every command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the supervisor in the foreground (default when -c is given)", runRun},
		{"check", "validate the config and its servicedefs, print the resolved plan", runCheck},
		{"reload", "ask the running broker to reload its config", runReload},
		{"admin", "send one admin verb to a control socket", runAdmin},
		{"hello", "send one Hello and print Negotiated or the refusal", runHello},
		{"status", "show every service of the running broker, its backends and counters", runStatus},
		{"events", "print the lifecycle event log, one line per event; -f follows it", runEvents},
		{"servicedef", "encode, decode, validate and install .servicedef files", runServicedef},
		{"doctor", "read-only checks of dirs, modes, sockets, servicedefs and backends", runDoctor},
		{"version", "print the broker, protocol and framing versions", runVersion},
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	case "-c", "--config", "-config":
		return runRun(ctx, args, stdout, stderr)
	}
	if len(args[0]) > 2 && args[0][:2] == "-c" || len(args[0]) > 9 && args[0][:9] == "--config=" {
		return runRun(ctx, args, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "broker: unknown command %q; run `broker --help` for the list\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: broker -c FILE | broker COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n`broker COMMAND --help` describes a command's flags.\n")
}
