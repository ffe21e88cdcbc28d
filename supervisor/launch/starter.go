package launch

import (
	"context"
	"errors"
	"time"
)

// errClosing refuses a start once shutdown has begun.
var errClosing = errors.New("broker is shutting down")

// startReq asks the starter thread to start c (or, with shutdown, to refuse all further
// starts).
type startReq struct {
	c        *child
	shutdown bool
}

// handleStart runs on the starter thread (m.thread), one goroutine locked to its OS
// thread for longer than any child lives: PR_SET_PDEATHSIG fires when the *thread* that
// forked a child exits, and Go retires threads, so every child must be forked from a
// thread that outlives it. The broker makes it the main thread, the one an upgrade
// execs from: an execve from any other thread ends the main thread, so children started
// there would die, and the new image's main thread is the old one.
func (m *Manager) handleStart(r *startReq) {
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
	if !m.thread.Do(func() { m.handleStart(&startReq{c: c}) }) {
		return errClosing // the Manager's own thread has stopped
	}
	return c.err
}
