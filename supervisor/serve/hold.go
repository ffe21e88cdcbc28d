package serve

import (
	"context"
	"net"
	"sync"
	"time"
)

// hold pauses a Loop's accept loop with its listener left open: what an upgrade in place
// needs while it hands the listener to the next image. Clients connecting meanwhile wait
// in the listener's backlog; none is refused.
type hold struct {
	mu      sync.Mutex
	release chan struct{} // non-nil while held; closed by Release
	parked  chan struct{} // closed once the accept goroutine has parked for this hold
	done    chan struct{} // closed when Run returns
	once    sync.Once
}

func (h *hold) doneC() chan struct{} {
	h.once.Do(func() { h.done = make(chan struct{}) })
	return h.done
}

// Hold stops taking connections off the listener and returns once no accept is in
// progress: every connection accepted before it is already counted (ConnectionsOpen).
// It returns at once when the loop has stopped, and ctx's error if ctx ends first.
func (l *Loop) Hold(ctx context.Context) error {
	l.hold.mu.Lock()
	if l.hold.release == nil {
		l.hold.release, l.hold.parked = make(chan struct{}), make(chan struct{})
	}
	parked := l.hold.parked
	l.hold.mu.Unlock()
	// A deadline in the past wakes the blocked Accept with a timeout, not a close.
	if err := l.ln.SetDeadline(time.Unix(1, 0)); err != nil {
		select {
		case <-l.hold.doneC():
			return nil // stopped: its listener is closed, nothing to hold
		default:
			return err
		}
	}
	select {
	case <-parked:
		return nil
	case <-l.hold.doneC():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release resumes accepting after Hold.
func (l *Loop) Release() {
	l.hold.mu.Lock()
	defer l.hold.mu.Unlock()
	if l.hold.release == nil {
		return
	}
	_ = l.ln.SetDeadline(time.Time{})
	close(l.hold.release)
	l.hold.release, l.hold.parked = nil, nil
}

// parkIfHeld runs on the accept goroutine after an accept error: while the loop is held
// it reports itself parked and waits for Release (true: accept again) or ctx.
func (l *Loop) parkIfHeld(ctx context.Context) bool {
	l.hold.mu.Lock()
	release, parked := l.hold.release, l.hold.parked
	if parked != nil {
		select {
		case <-parked:
		default:
			close(parked)
		}
	}
	l.hold.mu.Unlock()
	if release == nil {
		return false
	}
	select {
	case <-release:
	case <-ctx.Done():
	}
	return true
}

// stopped marks Run as returned, so that a Hold never waits for a loop that is gone.
func (l *Loop) stopped() { close(l.hold.doneC()) }

// Listener is the loop's listening socket, for an upgrade to keep across its exec.
func (l *Loop) Listener() *net.UnixListener { return l.ln }

// LastConnectionID is the last connection id handed out, for an upgrade's state.
func (s *Shared) LastConnectionID() uint64 { return s.connIDs.Load() }

// ResumeConnectionIDs continues the ids of the image before an upgrade: ids stay unique
// and increasing across it. Call it before any loop runs.
func (s *Shared) ResumeConnectionIDs(last uint64) { s.connIDs.Store(last) }
