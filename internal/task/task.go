// Package task is the one shape of a goroutine the broker starts and later stops: it runs
// with its own context, and Stop cancels that context and waits for the goroutine.
package task

import (
	"context"
	"time"
)

// Task is one running goroutine. The zero of *Task (nil) is a stopped task, so an owner
// can keep an optional one without checks.
type Task struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // f's result, set before done closes
}

// Go runs f on a new goroutine with a context derived from parent; f must return when
// that context ends.
func Go(parent context.Context, f func(ctx context.Context) error) *Task {
	ctx, cancel := context.WithCancel(parent)
	t := &Task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer cancel()
		t.err = f(ctx)
	}()
	return t
}

// Err is what the goroutine returned; nil until Done is closed.
func (t *Task) Err() error {
	select {
	case <-t.Done():
		if t != nil {
			return t.err
		}
	default:
	}
	return nil
}

// Cancel asks the task to stop without waiting.
func (t *Task) Cancel() {
	if t != nil {
		t.cancel()
	}
}

// Done is closed when the goroutine has returned (at once for a nil task).
func (t *Task) Done() <-chan struct{} {
	if t == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.done
}

// Stop cancels the task, waits for it, and returns what it returned.
func (t *Task) Stop() error {
	t.Cancel()
	<-t.Done()
	return t.Err()
}

// StopWithin cancels the task and waits up to timeout; false means it is still running,
// for the caller to report rather than hang on.
func (t *Task) StopWithin(timeout time.Duration) bool {
	t.Cancel()
	select {
	case <-t.Done():
		return true
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return true
	case <-timer.C:
		return false
	}
}
