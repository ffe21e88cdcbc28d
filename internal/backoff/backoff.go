// Package backoff is the one retry pacing of the broker: exponential from Initial to Max,
// with optional jitter, starting over once a failure-free stretch of ResetAfter has passed.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy describes a backoff. The zero Policy waits nothing.
type Policy struct {
	Initial time.Duration // first delay
	Max     time.Duration // ceiling; 0 means Initial
	// Jitter spreads each delay uniformly over ±Jitter of itself (0 to 1), so loops that
	// failed together do not retry in step.
	Jitter float64
	// ResetAfter, when set, starts over from Initial if the previous failure is older than
	// this: a loop that served for a while then fails retries quickly again.
	ResetAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Backoff is the state of one retry loop. It is owned by that loop's goroutine.
type Backoff struct {
	p    Policy
	cur  time.Duration
	last time.Time
}

// New returns a Backoff at its start.
func New(p Policy) *Backoff {
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	p.Jitter = min(max(p.Jitter, 0), 1)
	if p.Now == nil {
		p.Now = time.Now
	}
	return &Backoff{p: p}
}

// Next records a failure and returns how long to wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	now := b.p.Now()
	if b.p.ResetAfter > 0 && !b.last.IsZero() && now.Sub(b.last) > b.p.ResetAfter {
		b.cur = 0
	}
	b.last = now
	b.cur = min(max(2*b.cur, b.p.Initial), b.p.Max)
	d := b.cur
	if b.p.Jitter > 0 && d > 0 {
		d += time.Duration((rand.Float64()*2 - 1) * b.p.Jitter * float64(d))
	}
	return d
}

// Reset starts over: the next failure waits Initial again.
func (b *Backoff) Reset() { b.cur, b.last = 0, time.Time{} }

// Wait records a failure and waits the next delay; it returns false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
