package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/sdk/backend"
)

const (
	fdHeadroom      = 40              // descriptors the broker may open past its idle count
	fdExhaustHold   = 8 * time.Second // long enough for a broker's retry to back off
	fdRecoveryLimit = 20 * time.Second
)

// fdExhaustion (issue 10 item 2): the broker's RLIMIT_NOFILE is lowered to its idle
// count plus 40 and exhausted by connections that write nothing; meanwhile a new
// definition is written and the directory chmod-ed, again and again for 8 s; then the
// connections close.
// Seconds until a registered service (no definition needed) answers Negotiated again,
// and until the definition written during the exhaustion is live (a Hello negotiated).
func fdExhaustion(ctx context.Context, env *runEnv) (string, error) {
	r, err := newRig(env, "fd-exhaustion")
	if err != nil {
		return "", err
	}
	defer r.close()
	reg, shared, beSock := r.sock("reg"), r.sock("shared"), r.sock("reg-backend")
	regSvc := fmt.Sprintf("name = \"reg\"\nmode = \"registered\"\nsocket = %q\nversion = \"1.0.0\"\n"+
		"backend_endpoint = %q\nmax_connections = 1024", reg, beSock)
	sharedSvc := fmt.Sprintf("name = \"*\"\nmode = \"launch\"\nsocket = %q\nmax_connections = 1024", shared)
	// The binary is in place before; only the definition arrives during the exhaustion.
	if err := copyFile(env.self, filepath.Join(r.bin, "1.0.0", roleEcho)); err != nil {
		return "", fmt.Errorf("install backend: %w", err)
	}
	if err := r.writeConfig(regSvc, sharedSvc); err != nil {
		return "", err
	}
	stopBackend, err := runRegisteredBackend(ctx, beSock, "reg")
	if err != nil {
		return "", err
	}
	defer stopBackend()
	if err := r.start(ctx, reg, shared); err != nil {
		return "", err
	}
	if err := waitUntil(ctx, 10*time.Second, func() error { _, err := hello(ctx, reg, "reg"); return err }); err != nil {
		return "", fmt.Errorf("registered service never negotiated before the fault: %w", err)
	}

	limit := uint64(openFDs(r.pid()) + fdHeadroom)
	if err := unix.Prlimit(r.pid(), unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		return "", fmt.Errorf("prlimit NOFILE=%d on broker %d: %w", limit, r.pid(), err)
	}
	held, err := dialHold(reg, int(limit)+20, nil)
	defer closeAll(held)
	if err != nil {
		return "", err
	}
	// Every descriptor taken: one left free would let the broker read the directory.
	if err := waitUntil(ctx, 5*time.Second, func() error {
		if n := openFDs(r.pid()); uint64(n) < limit {
			return fmt.Errorf("broker holds %d descriptors of %d after %d connections", n, limit, len(held))
		}
		return nil
	}); err != nil {
		return "", err
	}
	if err := r.installBackend("late", roleEcho); err != nil {
		return "", err
	}
	// An attribute change on the directory (what a permissions fix or a config-management
	// run does) makes the broker re-read the whole directory, not just the new file. It
	// comes every 250 ms: a descriptor the broker frees for an instant (its own probes and
	// samplers) can let one read through, not all of them.
	for end := time.Now().Add(fdExhaustHold); time.Now().Before(end); {
		if err := os.Chmod(r.defs, 0o700); err != nil {
			return "", fmt.Errorf("chmod servicedef dir: %w", err)
		}
		if err := sleepCtx(ctx, min(250*time.Millisecond, time.Until(end))); err != nil {
			return "", err
		}
	}
	closeAll(held)
	t0 := time.Now()

	regAt, lateAt := time.Duration(-1), time.Duration(-1)
	regGot, lateGot := map[string]int{}, map[string]int{}
	err = waitUntil(ctx, fdRecoveryLimit, func() error {
		if regAt < 0 {
			_, err := hello(ctx, reg, "reg")
			if regGot[outcome(err)]++; err == nil {
				regAt = time.Since(t0)
			}
		}
		if lateAt < 0 {
			_, err := hello(ctx, shared, "late")
			if lateGot[outcome(err)]++; err == nil {
				lateAt = time.Since(t0)
			}
		}
		if regAt < 0 || lateAt < 0 {
			return fmt.Errorf("not recovered")
		}
		return nil
	})
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return fmt.Sprintf("registered_refused_s=%s new_def_live_s=%s nofile=%d held=%d registered_outcomes=%s new_def_outcomes=%s",
		secs(regAt), secs(lateAt), limit, len(held), counts(regGot), counts(lateGot)), nil
}

// secs renders a recovery time, or "none" past the limit.
func secs(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("none(>%s)", fdRecoveryLimit)
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

// runRegisteredBackend serves a registered echo backend at sock in this process until
// the returned stop is called.
func runRegisteredBackend(ctx context.Context, sock, service string) (func(), error) {
	srv, err := backend.New(backend.Options{Endpoint: sock, ServiceName: service, ServiceVersion: "1.0.0"})
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		return nil, fmt.Errorf("registered backend %s: %w", sock, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, func(ctx context.Context, c net.Conn) {})
	}()
	return func() { cancel(); <-done }, nil
}
