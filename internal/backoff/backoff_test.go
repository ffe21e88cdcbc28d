package backoff

import (
	"context"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestNext(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name  string
		p     Policy
		gaps  []time.Duration // clock advance before each Next
		delay []time.Duration
	}{
		{"doubles to the ceiling", Policy{Initial: 10 * ms, Max: 50 * ms}, []time.Duration{0, 0, 0, 0, 0}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms}},
		{"max below initial means initial", Policy{Initial: 10 * ms}, []time.Duration{0, 0}, []time.Duration{10 * ms, 10 * ms}},
		{"zero policy waits nothing", Policy{}, []time.Duration{0, 0}, []time.Duration{0, 0}},
		{"reset after a quiet stretch", Policy{Initial: 10 * ms, Max: time.Second, ResetAfter: time.Second}, []time.Duration{0, 0, 0, 2 * time.Second, 0}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 10 * ms, 20 * ms}},
		{"no reset inside the stretch", Policy{Initial: 10 * ms, Max: time.Second, ResetAfter: time.Second}, []time.Duration{0, 500 * ms, 500 * ms}, []time.Duration{10 * ms, 20 * ms, 40 * ms}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1000, 0)}
			c.p.Now = clk.now
			b := New(c.p)
			for i, gap := range c.gaps {
				clk.t = clk.t.Add(gap)
				if got := b.Next(); got != c.delay[i] {
					t.Fatalf("Next #%d = %v, want %v", i, got, c.delay[i])
				}
			}
		})
	}
}

func TestJitterStaysInBounds(t *testing.T) {
	b := New(Policy{Initial: 100 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.2})
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := b.Next()
		if d < 80*time.Millisecond || d > 120*time.Millisecond {
			t.Fatalf("delay %v outside 100ms ± 20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter gave only %d distinct delays", len(seen))
	}
}

func TestResetStartsOver(t *testing.T) {
	b := New(Policy{Initial: time.Millisecond, Max: time.Second})
	b.Next()
	b.Next()
	b.Reset()
	if d := b.Next(); d != time.Millisecond {
		t.Fatalf("after Reset, Next = %v, want 1ms", d)
	}
}

func TestWaitStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if New(Policy{Initial: time.Hour}).Wait(ctx) {
		t.Fatal("Wait returned true on a cancelled context")
	}
	if !New(Policy{Initial: time.Microsecond}).Wait(context.Background()) {
		t.Fatal("Wait returned false without cancellation")
	}
}
