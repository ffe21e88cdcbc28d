package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rpbroker/broker/supervisor/upgrade"
)

// upgradeCheckCommand is the internal pre-check a running broker runs against the binary
// that is to replace it, before anything changes: the new binary loads and validates the
// config and reads a state in the format the running broker would hand over.
const upgradeCheckCommand = "upgrade-check"

const upgradeCheckUsage = `usage: broker upgrade-check -c FILE (--state PATH | --state-fd N)

Internal: run by a broker against the binary that is to replace it in place. Loads and
validates FILE, reads the upgrade state and checks this binary understands its format.
Prints "version", "build", "state" and "config" lines and exits 0, or exits 1 with the
reason on stderr.
`

func runUpgradeCheck(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("broker "+upgradeCheckCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, upgradeCheckUsage) }
	var cfgPath, statePath string
	fs.StringVar(&cfgPath, "c", "", "config file")
	fs.StringVar(&cfgPath, "config", "", "config file")
	fs.StringVar(&statePath, "state", "", "state file")
	stateFD := fs.Int("state-fd", -1, "inherited descriptor of the state")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if cfgPath == "" || (statePath == "") == (*stateFD < 0) || fs.NArg() > 0 {
		fmt.Fprint(stderr, "broker upgrade-check: want -c FILE and one of --state, --state-fd\n"+upgradeCheckUsage)
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "broker upgrade-check: "+format+"\n", a...)
		return exitFailure
	}
	fmt.Fprintf(stdout, "version %s\n", currentVersion().Version)
	id, err := upgrade.BuildID()
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stdout, "build %s\n", id)

	var f *os.File
	if statePath != "" {
		if f, err = os.Open(statePath); err != nil {
			return fail("state: %v", err)
		}
	} else {
		f = os.NewFile(uintptr(*stateFD), "state")
	}
	defer f.Close()
	v, warnings, err := upgrade.CheckState(f)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "broker upgrade-check: warning: %s\n", w)
	}
	if err != nil {
		return fail("state: %v", err)
	}
	fmt.Fprintf(stdout, "state format v%d (this binary reads up to v%d)\n", v, upgrade.FormatVersion)

	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return fail("config: %v", err)
	}
	fmt.Fprintf(stdout, "config %s ok (%d services)\n", cfg.Path, len(cfg.Services))
	return exitOK
}
