package serve

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRateLimiter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := NewRateLimiter(3, time.Second, clk.now)
	for i := range 3 {
		if ok, _ := r.Allow(42); !ok {
			t.Fatalf("hello %d refused under the limit", i)
		}
	}
	clk.advance(400 * time.Millisecond)
	ok, retry := r.Allow(42)
	if ok || retry != 600*time.Millisecond {
		t.Fatalf("4th hello: ok=%v retry=%v, want refused with 600ms", ok, retry)
	}
	if ok, _ := r.Allow(43); !ok {
		t.Fatal("another pid must have its own window")
	}
	if ok, _ := r.Allow(0); !ok {
		t.Fatal("pid 0 is exempt")
	}
	clk.advance(600 * time.Millisecond)
	if ok, _ := r.Allow(42); !ok {
		t.Fatal("new window must admit again")
	}
	clk.advance(999*time.Millisecond + 999*time.Microsecond)
	for range 2 {
		r.Allow(42)
	}
	if ok, retry := r.Allow(42); ok || retry != time.Millisecond {
		t.Fatalf("retry floor: ok=%v retry=%v, want 1ms", ok, retry)
	}
	if ok, _ := NewRateLimiter(0, time.Second, nil).Allow(1); !ok {
		t.Fatal("limit 0 disables the limiter")
	}
}

func TestRateLimiterSweeps(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := NewRateLimiter(1, time.Second, clk.now)
	for pid := int32(1); pid <= 100; pid++ {
		r.Allow(pid)
	}
	clk.advance(2 * time.Second)
	r.Allow(1)
	if n := len(r.windows); n != 1 {
		t.Fatalf("windows after sweep = %d, want 1", n)
	}
}
