package serve

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := NewLogLimiter(time.Second, 2)
	for i, tc := range []struct {
		key  string
		at   time.Duration
		ok   bool
		supp int
	}{
		{"a", 0, true, 0}, {"a", 100 * time.Millisecond, false, 0}, {"a", 900 * time.Millisecond, false, 0},
		{"b", 0, true, 0},
		// Past maxKeys, new keys share one budget.
		{"c", 0, true, 0}, {"d", 0, false, 0},
		// Once the interval passed, the next line reports what was held back.
		{"a", time.Second, true, 2}, {"a", 1500 * time.Millisecond, false, 0}, {"b", 3 * time.Second, true, 0},
		{"e", 3 * time.Second, true, 1},
	} {
		if ok, supp := l.Allow(tc.key, t0.Add(tc.at)); ok != tc.ok || supp != tc.supp {
			t.Fatalf("step %d (%s at %v): ok=%v suppressed=%d, want %v %d", i, tc.key, tc.at, ok, supp, tc.ok, tc.supp)
		}
	}
}
