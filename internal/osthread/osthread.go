// Package osthread runs functions on one OS thread. The broker starts every launched
// child, and execs a new image on upgrade, from its main thread: PR_SET_PDEATHSIG fires
// when the *thread* that started a child exits, and an execve from any thread but the
// main one ends the main thread (docs/architecture.md, "Goroutines and who stops them").
package osthread

import (
	"context"
	"runtime"
)

// Thread serves calls on the goroutine running Serve, locked to its OS thread.
type Thread struct {
	calls chan call
	done  chan struct{} // closed when Serve returns
}

type call struct {
	fn   func()
	done chan struct{}
}

// New returns a Thread; calls wait until Serve runs.
func New() *Thread {
	return &Thread{calls: make(chan call), done: make(chan struct{})}
}

// Serve runs calls, one at a time, on the calling goroutine until stop closes. It locks
// the goroutine to its OS thread and never unlocks it: when Serve's goroutine is not the
// main one, its thread exits with it. Serve may run once.
func (t *Thread) Serve(stop <-chan struct{}) {
	runtime.LockOSThread()
	defer close(t.done)
	for {
		select {
		case <-stop:
			return
		case c := <-t.calls:
			c.fn()
			close(c.done)
		}
	}
}

// Do runs fn on the thread and returns when it has; false when Serve has returned (fn
// did not run).
func (t *Thread) Do(fn func()) bool {
	c := call{fn: fn, done: make(chan struct{})}
	select {
	case t.calls <- c:
	case <-t.done:
		return false
	}
	<-c.done
	return true
}

// Main runs f on a new goroutine while the calling goroutine serves the calls of a new
// Thread, which f finds in its ctx (FromContext), and returns f's result once f returns. Call it from main with the main goroutine locked to
// the main thread by an init function, so that the Thread is the process's main thread.
func Main(ctx context.Context, f func(ctx context.Context) int) int {
	t := New()
	res := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		res <- f(WithThread(ctx, t))
	}()
	t.Serve(stop)
	return <-res
}

type ctxKey struct{}

// WithThread returns ctx carrying t, so the command that starts the supervisor finds the
// main thread without a package-level variable.
func WithThread(ctx context.Context, t *Thread) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the Thread ctx carries, or nil.
func FromContext(ctx context.Context) *Thread {
	t, _ := ctx.Value(ctxKey{}).(*Thread)
	return t
}
