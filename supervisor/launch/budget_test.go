package launch

import (
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestCrashLoopExhaustsBudgetThenRecovers(t *testing.T) {
	h := newHarness(t)
	h.service("crashy", Settings{}, nil)
	h.behave("crashy", "exit3")
	start := time.Now()
	for i := range budgetAttempts {
		r := h.refused("crashy", "1.0.0")
		if r.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
			t.Fatalf("attempt %d: %v", i, r)
		}
	}
	r := h.refused("crashy", "1.0.0")
	if r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.Reason != wire.ReasonSpawnBudget {
		t.Fatalf("after %d crashes: %v", budgetAttempts, r)
	}
	// The window opened at the first attempt: under -race three crashing children can
	// take more than a second, so the floor is measured, not fixed.
	if floor := (budgetWindow - time.Since(start)).Milliseconds(); int64(r.RetryAfterMs) < floor || r.RetryAfterMs > 30000 {
		t.Errorf("retry_after_ms %d, want the rest of the 30 s window (%d..30000)", r.RetryAfterMs, floor)
	}
	b := h.m.Budgets()
	if len(b) != 1 || b[0].AttemptsUsed != 3 || b[0].Remaining != 0 || b[0].InFlight || b[0].RetryAfterMS == 0 ||
		b[0].ServiceName != "crashy" || b[0].BrokerInstance != "private:crashy" {
		t.Errorf("Budgets() = %+v", b)
	}
	h.clock.Advance(20 * time.Second)
	if r := h.refused("crashy", "1.0.0"); r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.RetryAfterMs > 10000 {
		t.Errorf("20 s later: %v, want RATE_LIMITED with at most 10 s left", r)
	}
	if n := h.ev.count(wirepb.EventKind_SPAWN_ATTEMPT); n != budgetAttempts {
		t.Errorf("%d spawn attempts, want %d: refusals must not start children", n, budgetAttempts)
	}

	h.behave("crashy", "serve")
	h.clock.Advance(10 * time.Second)
	n := h.negotiate("crashy", "1.0.0")
	echoThrough(t, n.BackendPipe)
	// A new window opened with this start; it stays counted while the backend is young.
	if b := h.m.Budgets(); len(b) != 1 || b[0].AttemptsUsed != 1 || b[0].Remaining != budgetAttempts-1 {
		t.Errorf("Budgets() after a fresh window's successful start = %+v, want 1 attempt used", b)
	}
	live := h.pidOf(n.BackendPipe)
	pids := h.ev.attempts("crashy")
	if len(pids) != budgetAttempts+1 || pids[len(pids)-1] != live {
		t.Fatalf("children %v, want %d crashed and then %d", pids, budgetAttempts, live)
	}
	for _, pid := range pids[:budgetAttempts] {
		waitGone(t, pid, 5*time.Second)
	}
}

// A backend that exits on its own right after it became ready is a failed start: the
// fourth start within the window is refused RATE_LIMITED, whatever way it died.
func TestCrashAfterReadySpendsBudget(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		svc      string
		behavior string
		sig      syscall.Signal
		status   string
	}{
		{"killed", "serve", syscall.SIGKILL, "signal: killed"},
		{"exit0", "usr1exit 0", syscall.SIGUSR1, "exit status 0"},
		{"exit7", "usr1exit 7", syscall.SIGUSR1, "exit status 7"},
	}
	for _, tc := range cases {
		h.service(tc.svc, Settings{}, nil)
		h.behave(tc.svc, tc.behavior)
	}
	for _, tc := range cases {
		t.Run(tc.svc, func(t *testing.T) {
			start := time.Now()
			respawns := 0
			var r *wirepb.Refused
			for range 10 { // before the fix: unbounded
				hr, err := hello(h.sock, tc.svc, "1.0.0")
				if err != nil {
					t.Fatal(err)
				}
				if r = hr.GetRefused(); r != nil {
					break
				}
				respawns++
				pid := h.pidOf(hr.GetNegotiated().GetBackendPipe())
				if err := syscall.Kill(pid, tc.sig); err != nil {
					t.Fatal(err)
				}
				if ev := h.waitEvent(wirepb.EventKind_DIED_CRASH, pid); ev.Status != tc.status || ev.Reason != "backend exited unexpectedly" {
					t.Fatalf("died %q (%s), want %q", ev.Status, ev.Reason, tc.status)
				}
			}
			t.Logf("%s: %d ready starts before the refusal", tc.svc, respawns)
			if respawns != budgetAttempts || r == nil {
				t.Fatalf("%d starts before a refusal (%v), want %d", respawns, r, budgetAttempts)
			}
			floor := (budgetWindow - time.Since(start)).Milliseconds()
			if r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.Reason != wire.ReasonSpawnBudget ||
				int64(r.RetryAfterMs) < floor || r.RetryAfterMs > uint64(budgetWindow.Milliseconds()) {
				t.Errorf("refusal %v, want RATE_LIMITED %q with retry_after_ms in %d..30000", r, wire.ReasonSpawnBudget, floor)
			}
		})
	}
}

// A backend that lived longer than the window does not count when it crashes: after it,
// a full budget of starts is available.
func TestLongLivedBackendDoesNotSpendBudget(t *testing.T) {
	h := newHarness(t)
	h.service("old", Settings{}, nil)
	pid := h.pidOf(h.negotiate("old", "1.0.0").BackendPipe)
	h.clock.Advance(budgetWindow + time.Second)
	crash := func(pid int) {
		t.Helper()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h.waitEvent(wirepb.EventKind_DIED_CRASH, pid)
	}
	crash(pid)
	for i := range budgetAttempts {
		hr, err := hello(h.sock, "old", "1.0.0")
		if err != nil || hr.GetNegotiated() == nil {
			t.Fatalf("start %d after a long-lived backend crashed: %v %v", i+1, hr, err)
		}
		crash(h.pidOf(hr.GetNegotiated().BackendPipe))
	}
	if r := h.refused("old", "1.0.0"); r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED {
		t.Errorf("after %d young crashes: %v, want RATE_LIMITED", budgetAttempts, r)
	}
}

// Stops the broker chose are not failures: a backend stopped for idleness four times
// within the window is started a fifth time.
func TestIdleStopsDoNotSpendBudget(t *testing.T) {
	h := newHarness(t)
	h.service("idle", Settings{IdleTimeout: 100 * time.Millisecond}, nil)
	for i := range budgetAttempts + 2 {
		hr, err := hello(h.sock, "idle", "1.0.0")
		if err != nil || hr.GetNegotiated() == nil {
			t.Fatalf("start %d: %v %v", i+1, hr, err)
		}
		// By its SPAWN_ATTEMPT, not the registry: an idle stop may already have withdrawn it.
		pids := h.ev.attempts("idle")
		if len(pids) != i+1 {
			t.Fatalf("start %d: %d children started", i+1, len(pids))
		}
		h.waitEvent(wirepb.EventKind_DIED_IDLE, pids[i])
	}
}
