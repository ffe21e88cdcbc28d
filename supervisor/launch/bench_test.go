package launch

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire/wirepb"
)

// BenchmarkColdStart measures what the broker adds to a cold Hello: Hello → Negotiated
// for a service with no backend, minus the backend's own start-to-listen time (from the
// moment its exec returned, SPAWN_ATTEMPT, to the moment it reported listening). Each
// iteration asks for a new version, so each spawns a fresh backend. Run with
// -benchtime=60x or more for stable percentiles.
func BenchmarkColdStart(b *testing.B) {
	// Sockets live on tmpfs in production ($XDG_RUNTIME_DIR); on a journalled disk a
	// bind alone can take a millisecond.
	base := "/tmp"
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		base = "/dev/shm"
	}
	h := newHarnessIn(b, base)
	h.service("bench", Settings{IdleTimeout: 200 * time.Millisecond}, nil)
	type sample struct {
		pipe       string
		start, end time.Time
	}
	var samples []sample
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		n := h.negotiate("bench", fmt.Sprintf("1.0.%d", i))
		samples = append(samples, sample{n.BackendPipe, start, time.Now()})
	}
	b.StopTimer()

	listen := map[int]time.Time{}
	for _, r := range h.waitRecords(len(samples)) {
		listen[r.PID] = time.Unix(0, r.ListenNS)
	}
	pidByPipe := map[string]int{}
	h.ev.mu.Lock()
	execAt := map[int]time.Time{}
	for _, ev := range h.ev.all {
		if ev.Kind == wirepb.EventKind_SPAWN_ATTEMPT {
			execAt[ev.PID] = ev.Time
		}
	}
	h.ev.mu.Unlock()
	for _, bi := range h.m.Backends() {
		pidByPipe[bi.Endpoint] = bi.PID
	}
	var total, child, overhead, pre, post []float64
	for _, s := range samples {
		pid := pidOfPipe(h, s.pipe, pidByPipe)
		l, ok1 := listen[pid]
		e, ok2 := execAt[pid]
		if !ok1 || !ok2 {
			b.Fatalf("no listen record or spawn event for pid %d", pid)
		}
		tot := s.end.Sub(s.start)
		own := l.Sub(e)
		total = append(total, us(tot))
		child = append(child, us(own))
		overhead = append(overhead, us(tot-own))
		pre = append(pre, us(e.Sub(s.start)))
		post = append(post, us(s.end.Sub(l)))
	}
	b.ReportMetric(pct(overhead, 50), "overhead-p50-µs")
	b.ReportMetric(pct(overhead, 99), "overhead-p99-µs")
	b.ReportMetric(pct(total, 50), "hello-p50-µs")
	b.ReportMetric(pct(child, 50), "backend-start-p50-µs")
	b.ReportMetric(pct(pre, 50), "pre-exec-p50-µs")
	b.ReportMetric(pct(post, 50), "post-listen-p50-µs")
	b.ReportMetric(0, "ns/op") // wall time per op is dominated by the backend itself
}

// pidOfPipe finds the pid of a backend that may already have been stopped for idleness.
func pidOfPipe(h *harness, pipe string, live map[string]int) int {
	if pid, ok := live[pipe]; ok {
		return pid
	}
	for _, r := range h.records() {
		if r.Env["RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE"] == pipe {
			return r.PID
		}
	}
	return 0
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
