package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	crashLoopWindow = 25 * time.Second
	crashLoopPace   = 500 * time.Millisecond // one Hello per pace at most
)

// crashLoop (issue 10 item 4): a launch service whose backend answers the readiness
// probe, then exits 1 as soon as a client uses it. One Hello per 500 ms, each followed by
// a use of the backend and a wait for its exit, for up to 25 s: how many backends the
// broker started before its first RATE_LIMITED refusal.
func crashLoop(ctx context.Context, env *runEnv) (string, error) {
	r, err := newRig(env, "crash-loop")
	if err != nil {
		return "", err
	}
	defer r.close()
	sock := r.sock("crashy")
	svc := fmt.Sprintf("name = \"crashy\"\nmode = \"launch\"\nsocket = %q\nstart_timeout = \"5s\"", sock)
	if err := r.installBackend("crashy", roleCrash); err != nil {
		return "", err
	}
	if err := r.writeConfig(svc); err != nil {
		return "", err
	}
	if err := r.start(ctx, sock); err != nil {
		return "", err
	}
	start := time.Now()
	starts := map[string]bool{} // backend pipes: each spawn binds a fresh one
	got := map[string]int{}
	hellos, limited := 0, false
	for time.Since(start) < crashLoopWindow && !limited {
		next := time.Now().Add(crashLoopPace)
		hellos++
		n, err := hello(ctx, sock, "crashy")
		got[outcome(err)]++
		if ref, ok := refusal(err); ok && ref.Code == wirepb.ErrorCode_ERROR_RATE_LIMITED {
			limited = true
			break
		}
		if err == nil {
			starts[n.GetBackendPipe()] = true
			if err := crashBackend(ctx, n.GetBackendPipe()); err != nil {
				got["use-error"]++
				if r.env.verbose {
					fmt.Fprintf(r.env.stderr, "  [crash-loop] %v\n", err)
				}
			}
		}
		if err := sleepCtx(ctx, time.Until(next)); err != nil {
			return "", err
		}
	}
	first := "none"
	if limited {
		first = "RATE_LIMITED"
	}
	return fmt.Sprintf("respawns_before_refusal=%d starts=%d first_refusal=%s hellos=%d elapsed_s=%.1f outcomes=%s",
		max(len(starts)-1, 0), len(starts), first, hellos, time.Since(start).Seconds(), counts(got)), nil
}

// crashBackend uses the backend at pipe, which makes it exit, and waits (up to 3 s) until
// the broker reaped it, so the next Hello finds no live backend.
func crashBackend(ctx context.Context, pipe string) error {
	c, err := net.DialTimeout("unix", pipe, 2*time.Second)
	if err != nil {
		return fmt.Errorf("dial backend %s: %w", pipe, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return fmt.Errorf("write backend %s: %w", pipe, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read backend pid from %s: %w", pipe, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return fmt.Errorf("backend %s sent %q, not a pid", pipe, line)
	}
	// Reaped, not just dead: then the broker has seen the exit too.
	return waitUntil(ctx, 3*time.Second, func() error {
		if !reaped(pid) {
			return fmt.Errorf("backend pid %d not reaped", pid)
		}
		return nil
	})
}
