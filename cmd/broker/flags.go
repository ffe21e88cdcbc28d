package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rpbroker/broker/config"
)

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("broker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: broker %s %s\n\nflags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags that may stand before, between or after positional arguments
// (`broker admin status --json`). It returns the positionals, and an exit code when
// parsing ended the command (help: 0, bad usage: 2).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
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
