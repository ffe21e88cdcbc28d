package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// removedStopLimit bounds the wait for the removed service's backend to stop.
const removedStopLimit = 20 * time.Second

// removedService (issue 10 item 5): a named launch service with a running backend is
// removed from broker.toml and the broker reloaded with SIGHUP; seconds until the backend
// process is gone.
func removedService(ctx context.Context, env *runEnv) (string, error) {
	r, err := newRig(env, "removed-service")
	if err != nil {
		return "", err
	}
	defer r.close()
	gone, keep := r.sock("gone"), r.sock("keep")
	// A registered service stays, so the reloaded file is valid and nothing else can reach
	// the removed service's backend (a "*" service could).
	keepSvc := fmt.Sprintf("name = \"keep\"\nmode = \"registered\"\nsocket = %q\nversion = \"1.0.0\"\n"+
		"backend_endpoint = %q\nverify = \"connect\"", keep, r.sock("keep-backend"))
	goneSvc := fmt.Sprintf("name = \"gone\"\nmode = \"launch\"\nsocket = %q\nidle_timeout = \"10m\"", gone)
	if err := r.installBackend("gone", roleEcho); err != nil {
		return "", err
	}
	if err := r.writeConfig(keepSvc, goneSvc); err != nil {
		return "", err
	}
	if err := r.start(ctx, gone, keep); err != nil {
		return "", err
	}
	before := children(r.pid())
	if _, err := hello(ctx, gone, "gone"); err != nil {
		return "", fmt.Errorf("hello gone: %w", err)
	}
	var pid int
	err = waitUntil(ctx, 5*time.Second, func() error {
		for _, c := range children(r.pid()) {
			if !slices.Contains(before, c) && alive(c) {
				pid = c
				return nil
			}
		}
		return fmt.Errorf("no backend child of broker %d after a negotiated Hello", r.pid())
	})
	if err != nil {
		return "", err
	}
	if err := r.writeConfig(keepSvc); err != nil {
		return "", err
	}
	t0 := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return "", fmt.Errorf("SIGHUP broker: %w", err)
	}
	err = waitUntil(ctx, removedStopLimit, func() error {
		if alive(pid) {
			return fmt.Errorf("backend %d alive", pid)
		}
		return nil
	})
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		return fmt.Sprintf("backend_stopped_s=none still_running_after=%s", removedStopLimit), nil
	}
	return fmt.Sprintf("backend_stopped_s=%.2f", time.Since(t0).Seconds()), nil
}
