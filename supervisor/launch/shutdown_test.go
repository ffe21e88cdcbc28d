package launch

import (
	"fmt"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Shutdown does not wait for a spawn in flight: the child still starting is killed at
// once (not after the grace, though it ignores SIGTERM), its waiting Hello is answered
// SHUTTING_DOWN well before start_timeout, and Run returns soon after.
func TestShutdownCancelsInFlightSpawn(t *testing.T) {
	const grace, startTimeout = 5 * time.Second, 10 * time.Second
	h := newHarness(t, func(o *Options) { o.Grace = grace })
	h.service("stuck", Settings{StartTimeout: startTimeout}, nil)
	h.behave("stuck", "hang")
	type reply struct {
		hr  *wirepb.HelloReply
		err error
		at  time.Time
	}
	got := make(chan reply, 1)
	go func() {
		hr, err := hello(h.sock, "stuck", "1.0.0")
		got <- reply{hr, err, time.Now()}
	}()
	pid := h.firstAttempt("stuck")
	testutil.WaitForErr(t, 10*time.Second, func() error {
		if !ignoresSIGTERM(pid) {
			return fmt.Errorf("child %d does not ignore SIGTERM yet", pid)
		}
		return nil
	})

	cancelled := time.Now()
	h.cancel() // the Manager only: the serve loop stays up to answer the Hello
	r := <-got
	if r.err != nil || r.hr.GetRefused().GetCode() != wirepb.ErrorCode_ERROR_SHUTTING_DOWN {
		t.Fatalf("Hello in flight at shutdown: %v, %v; want SHUTTING_DOWN", r.hr, r.err)
	}
	if took := r.at.Sub(cancelled); took > time.Second {
		t.Errorf("in-flight Hello answered %v after shutdown began, want < 1s", took)
	}
	waitGone(t, pid, time.Second)
	select {
	case err := <-h.runDone:
		h.runDone <- err // for h.stop
		t.Logf("Hello answered after %v, Run returned after %v", r.at.Sub(cancelled), time.Since(cancelled))
		if took := time.Since(cancelled); took > 2*time.Second {
			t.Errorf("Run returned %v after cancel, want well under the %v grace", took, grace)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Run did not return within 2s of cancel (grace %v)", grace)
	}
	if ev := h.waitEvent(wirepb.EventKind_DIED_SHUTDOWN, pid); ev.Status != "signal: killed" {
		t.Errorf("starting child died with %q, want killed at once", ev.Status)
	}
}
