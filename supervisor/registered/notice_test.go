package registered_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/registered"
)

// msgProbeFailed is the debug line Run writes for a repeated probe failure.
const msgProbeFailed = "registered backend probe failed"

// TestNoticedWithinASecond: a backend that comes up long after the broker started (its
// re-probe backoff has grown to its ceiling) is verified within 1 s of its endpoint
// appearing, with the default backoff. The listener is this test process's own, bound
// the moment a failed probe has been logged: the next probe is then a whole backoff
// away, the worst case for an endpoint that appears.
func TestNoticedWithinASecond(t *testing.T) {
	const within = time.Second
	dir := testutil.ShortDir(t)
	ep := filepath.Join(dir, "late.sock")
	e := run(t, ep, registered.Options{Verify: registered.VerifyConnect})
	// 20+40+80+160+320 ms, then the ceiling: the 7th failure waits the longest.
	const failures = 7
	testutil.WaitFor(t, fmt.Sprintf("%d failed probes", failures), func() bool {
		n := 0
		for _, m := range e.logLines(t) {
			if m["message"] == msgProbeFailed || m["message"] == msgDown {
				n++
			}
		}
		return n >= failures
	})
	appeared := time.Now()
	ln, err := net.Listen("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testutil.WaitForErr(t, within, func() error {
		if e.b.Current() == nil {
			return fmt.Errorf("backend not verified %v after its endpoint appeared; log:\n%s", time.Since(appeared), e.log)
		}
		return nil
	})
	t.Logf("noticed %v after the endpoint appeared", time.Since(appeared))
	if cur := e.b.Current(); cur.PID != os.Getpid() {
		t.Fatalf("verified pid %d, want this process (%d)", cur.PID, os.Getpid())
	}
	e.wantRoute(t)
	// At the default level an operator sees the backend missing, then appearing.
	e.wantLevel(t, "message", msgDown, "info")
	e.wantLevel(t, "event", "backend_up", "info")
}

// wantLevel checks that every log line whose key is val was logged at level, and that
// there is one.
func (e *env) wantLevel(t *testing.T, key, val, level string) {
	t.Helper()
	n := 0
	for _, m := range e.logLines(t) {
		if m[key] == val {
			n++
			if m["level"] != level {
				t.Errorf("%s=%q logged at %v, want %s: %v", key, val, m["level"], level, m)
			}
		}
	}
	if n == 0 {
		t.Errorf("no line with %s=%q; log:\n%s", key, val, e.log)
	}
}
