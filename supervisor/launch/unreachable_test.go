package launch

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// StopUnreachable withdraws the backends of services no longer reachable at once, and
// stops them off the caller's goroutine: SIGTERM, SIGKILL after the grace for one that
// ignores it. A reachable service's backend keeps serving.
func TestStopUnreachableStopsRemovedServices(t *testing.T) {
	const grace = time.Second
	h := newHarness(t, func(o *Options) { o.Grace = grace })
	for _, svc := range []string{"keep", "gone", "stubborn"} {
		h.service(svc, Settings{}, nil)
	}
	h.behave("stubborn", "stubborn")
	keep := h.negotiate("keep", "1.0.0")
	gone := h.negotiate("gone", "1.0.0")
	stubborn := h.negotiate("stubborn", "1.0.0")
	pKeep, pGone, pStubborn := h.pidOf(keep.BackendPipe), h.pidOf(gone.BackendPipe), h.pidOf(stubborn.BackendPipe)
	testutil.WaitForErr(t, 10*time.Second, func() error {
		if !ignoresSIGTERM(pStubborn) {
			return fmt.Errorf("stubborn backend %d does not ignore SIGTERM yet", pStubborn)
		}
		return nil
	})

	var asked []string
	start := time.Now()
	h.m.StopUnreachable(func(svc string) bool {
		asked = append(asked, svc)
		return svc == "keep"
	})
	if took := time.Since(start); took > grace/2 {
		t.Errorf("StopUnreachable took %v: it must not wait for the stops (grace %v)", took, grace)
	}
	slices.Sort(asked)
	if !slices.Equal(asked, []string{"gone", "keep", "stubborn"}) {
		t.Errorf("reachable asked about %v", asked)
	}
	// Withdrawn before it returned: status, registry and the warm path.
	if infos := h.m.Backends(); len(infos) != 1 || infos[0].PID != pKeep {
		t.Errorf("Backends() right after = %+v, want only keep (%d)", infos, pKeep)
	}
	if reg := h.reg.List(); len(reg) != 1 || reg[0].PID != pKeep {
		t.Errorf("registry right after = %d entries, want only keep", len(reg))
	}
	if again := h.negotiate("gone", "1.0.0"); again.BackendPipe == gone.BackendPipe {
		t.Error("a Hello was routed to a withdrawn backend")
	}

	if ev := h.waitEvent(wirepb.EventKind_DIED_SHUTDOWN, pGone); ev.Status != "exit status 0" {
		t.Errorf("removed backend died with %q, want a clean SIGTERM exit", ev.Status)
	}
	ev := h.waitEvent(wirepb.EventKind_DIED_SHUTDOWN, pStubborn)
	if ev.Status != "signal: killed" || ev.Reason != "service no longer configured" {
		t.Errorf("stubborn backend died with %q (%s), want SIGKILL after the grace", ev.Status, ev.Reason)
	}
	if took := ev.Time.Sub(start); took < grace {
		t.Errorf("stubborn backend killed %v after the call, before the %v grace", took, grace)
	}
	waitGone(t, pGone, time.Second)
	waitGone(t, pStubborn, time.Second)
	echoThrough(t, keep.BackendPipe)
	if h.negotiate("keep", "1.0.0").BackendPipe != keep.BackendPipe {
		t.Error("the reachable service lost its backend")
	}
}

// The stops StopUnreachable starts belong to the Manager: Run returns only after the
// withdrawn child has been reaped.
func TestRunWaitsForUnreachableStops(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Grace = 300 * time.Millisecond })
	h.service("stubborn", Settings{}, nil)
	h.behave("stubborn", "stubborn")
	pid := h.pidOf(h.negotiate("stubborn", "1.0.0").BackendPipe)
	testutil.WaitForErr(t, 10*time.Second, func() error {
		if !ignoresSIGTERM(pid) {
			return fmt.Errorf("backend %d does not ignore SIGTERM yet", pid)
		}
		return nil
	})
	h.m.StopUnreachable(func(string) bool { return false })
	h.stop()
	if s := procState(pid); s != "" {
		t.Errorf("pid %d still present (state %s) after Run returned", pid, s)
	}
}
