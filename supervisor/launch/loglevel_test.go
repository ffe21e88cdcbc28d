package launch

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// logged returns the log lines of h whose "event" is ev.
func (h *harness) logged(ev string) []map[string]any {
	h.t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(h.log.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			h.t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["event"] == ev {
			out = append(out, m)
		}
	}
	return out
}

// wantLogged checks that ev was logged n times, each at level.
func (h *harness) wantLogged(ev, level string, n int) {
	h.t.Helper()
	lines := h.logged(ev)
	if len(lines) != n {
		h.t.Fatalf("%d %q lines, want %d; log:\n%s", len(lines), ev, n, h.log)
	}
	for _, m := range lines {
		if m["level"] != level {
			h.t.Errorf("%q logged at %v, want %s: %v", ev, m["level"], level, m)
		}
	}
}

// TestSpawnTroubleIsLoggedAtWarn: what an operator must see at the default level (info)
// is logged at warn: each failed spawn, each respawn, a spent budget (once per window,
// not per refused Hello) and a crash; a stop the broker chose is not a warning.
func TestSpawnTroubleIsLoggedAtWarn(t *testing.T) {
	t.Run("crash loop", func(t *testing.T) {
		h := newHarness(t)
		h.service("crashy", Settings{}, nil)
		h.behave("crashy", "exit3")
		for range budgetAttempts {
			if r := h.refused("crashy", "1.0.0"); r.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
				t.Fatalf("refused %v, want BACKEND_SPAWN_FAILED", r)
			}
		}
		for range 3 {
			if r := h.refused("crashy", "1.0.0"); r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED {
				t.Fatalf("refused %v, want RATE_LIMITED", r)
			}
		}
		h.wantLogged("spawn_failed", "warn", budgetAttempts)
		h.wantLogged("respawn", "warn", budgetAttempts-1)
		h.wantLogged("spawn_budget_exhausted", "warn", 1)
		for i, m := range h.logged("respawn") {
			if m["attempt"] != float64(i+2) || m["service"] != "crashy" {
				t.Errorf("respawn line %d: %v, want attempt %d of crashy", i, m, i+2)
			}
		}
		if m := h.logged("spawn_budget_exhausted")[0]; m["window"] != "30s" || !strings.HasSuffix(fmt.Sprint(m["retry_in"]), "s") {
			t.Errorf("budget line %v, want window=30s and retry_in with its unit", m)
		}
	})

	t.Run("crash after ready, then respawn", func(t *testing.T) {
		h := newHarness(t)
		h.service("flaky", Settings{}, nil)
		h.behave("flaky", "usr1exit 7")
		n := h.negotiate("flaky", "1.0.0")
		pid := h.pidOf(n.GetBackendPipe())
		ready := h.logged("SPAWN")
		if len(ready) != 1 || ready[0]["level"] != "info" || !strings.HasSuffix(fmt.Sprint(ready[0]["took"]), "s") {
			t.Fatalf("backend ready lines %v, want one at info with took=<duration>", ready)
		}
		if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		h.waitEvent(wirepb.EventKind_DIED_CRASH, pid)
		testutil.WaitFor(t, "the crash to be logged", func() bool { return len(h.logged("DIED_CRASH")) == 1 })
		h.wantLogged("DIED_CRASH", "warn", 1)
		h.negotiate("flaky", "1.0.0")
		h.wantLogged("respawn", "warn", 1)
		h.wantLogged("spawn_failed", "warn", 0)
		h.stop()
		h.wantLogged("DIED_SHUTDOWN", "info", 1)
	})
}
