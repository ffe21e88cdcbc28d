package servicedef

import (
	"errors"
	"syscall"
	"time"

	"github.com/rpbroker/broker/internal/backoff"
)

// Transient failures are retried on a short clock of their own: they say nothing about the
// directory, and a definition written while they last must go live soon after they end.
const (
	transientRetryMin = 50 * time.Millisecond
	transientRetryMax = 400 * time.Millisecond
)

// isTransient reports whether err is a shortage that passes by itself: out of descriptors
// (EMFILE, ENFILE), out of memory (ENOMEM) or an interrupted call (EINTR). The Loader never
// counts such an error against the directory or a file: it keeps the last good definitions
// and retries.
func isTransient(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EINTR:
		return true
	}
	return false
}

// retrier is the doubling backoff of transient retries. It belongs to the Run goroutine.
type retrier struct {
	pace  *backoff.Backoff
	timer *time.Timer
	c     <-chan time.Time // nil while no retry is due
	since time.Time        // start of the current transient spell; zero when none
	count int              // failures in the current spell
}

func newRetrier() *retrier {
	return &retrier{pace: backoff.New(backoff.Policy{Initial: transientRetryMin, Max: transientRetryMax})}
}

// fail records a transient failure and reports whether it opened a spell (the caller logs
// the first failure of a spell louder than the rest).
func (r *retrier) fail() (first bool) {
	first = r.since.IsZero()
	if first {
		r.since = time.Now()
	}
	r.count++
	return first
}

// arm schedules a retry on c unless one is already due.
func (r *retrier) arm() {
	if r.c != nil {
		return
	}
	r.timer = time.NewTimer(r.delay())
	r.c = r.timer.C
}

// delay returns the wait before the next attempt; each one doubles, up to the max.
func (r *retrier) delay() time.Duration { return r.pace.Next() }

// fired marks the armed retry as consumed.
func (r *retrier) fired() { r.c = nil }

// disarm drops a due retry; the spell, if any, goes on.
func (r *retrier) disarm() {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.c = nil
}

// ok ends the spell, if any, and returns how long it lasted and how many failures it saw.
func (r *retrier) ok() (lasted time.Duration, failures int) {
	r.disarm()
	r.pace.Reset()
	if r.since.IsZero() {
		return 0, 0
	}
	lasted, failures = time.Since(r.since), r.count
	r.since, r.count = time.Time{}, 0
	return lasted, failures
}
