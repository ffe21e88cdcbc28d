package launch

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// errClosing refuses a start once shutdown has begun.
var errClosing = errors.New("broker is shutting down")

// startReq asks the starter thread to start c (or, with shutdown, to refuse all further
// starts). done is closed when the request has been handled.
type startReq struct {
	c        *child
	shutdown bool
	done     chan struct{}
}

// starter runs on one goroutine locked to its OS thread for the Manager's lifetime:
// PR_SET_PDEATHSIG fires when the *thread* that forked a child exits, and Go retires
// threads, so every child must be forked from a thread that outlives it. The thread is
// never unlocked; it exits with the goroutine after every child has been reaped.
func (m *Manager) starter(stop <-chan struct{}) {
	runtime.LockOSThread()
	for {
		select {
		case <-stop:
			return
		case r := <-m.start:
			m.handleStart(&r)
		}
	}
}

func (m *Manager) handleStart(r *startReq) {
	defer close(r.done)
	m.mu.Lock()
	if r.shutdown {
		m.closing = true
	}
	closing := m.closing
	m.mu.Unlock()
	if r.shutdown {
		return
	}
	if closing {
		r.c.err = errClosing
		return
	}
	if err := r.c.cmd.Start(); err != nil {
		r.c.err = err
		return
	}
	// Set before the child becomes visible to shutdown and status (a zero pid must never
	// reach kill: it would signal the broker's own process group).
	c := r.c
	c.pid = c.cmd.Process.Pid
	c.started = time.Now()
	c.ctx, c.cancel = context.WithCancel(m.runCtx)
	c.lastUsed.Store(c.started.UnixNano())
	// Registered before the next request is taken, so shutdown's snapshot sees it.
	m.mu.Lock()
	m.children[r.c] = struct{}{}
	m.mu.Unlock()
}

// startChild starts c on the starter thread; it fails with errClosing once shutdown
// has begun. Spawns run only after Run has started (claim checks), so running closes
// promptly.
func (m *Manager) startChild(c *child) error {
	<-m.running
	r := startReq{c: c, done: make(chan struct{})}
	select {
	case m.start <- r:
	case <-m.stopped:
		return errClosing
	}
	<-r.done
	return c.err
}
