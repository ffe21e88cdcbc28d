package main

import (
	"context"
	"io"
	"runtime"

	"github.com/rpbroker/broker/internal/osthread"
)

// The main goroutine stays on the process's main thread, which serves an osthread.Thread
// for the whole run: launched backends are started from it and an upgrade execs from it.
// PR_SET_PDEATHSIG fires when the *thread* that started a child exits, and an execve from
// any thread but the main one ends the main thread; so only the main thread keeps every
// child alive across any number of upgrades (docs/architecture.md).
func init() { runtime.LockOSThread() }

// start runs the command line on a goroutine of its own while the main goroutine serves
// the main thread; commands find it with osthread.FromContext. The internal pre-check
// mode is answered here: a running broker runs it against a new binary, no user does, so
// it stays out of the command table (help, completion).
func start(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return osthread.Main(ctx, func(ctx context.Context) int {
		if len(args) > 0 && args[0] == upgradeCheckCommand {
			return runUpgradeCheck(ctx, args[1:], stdout, stderr)
		}
		return dispatch(ctx, args, stdout, stderr)
	})
}
