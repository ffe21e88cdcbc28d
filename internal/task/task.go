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
}

// Go runs f on a new goroutine with a context derived from parent; f must return when
// that context ends.
func Go(parent context.Context, f func(ctx context.Context)) *Task {
	ctx, cancel := context.WithCancel(parent)
	t := &Task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer cancel()
		f(ctx)
	}()
	return t
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

// Stop cancels the task and waits for it.
func (t *Task) Stop() {
	t.Cancel()
	<-t.Done()
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
