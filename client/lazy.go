package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// lazyConn is what Connect returns when the broker granted early data (the early bytes
// went out with the Hello on the control connection) or write-ahead: the handoff-ready
// EVENT is not waited for in Connect but settled by the first Read or CloseWrite, or the
// first Write that may not go ahead of it. That saves the caller a round trip (its
// request travels while the backend adopts the connection) and a wake-up (the EVENT and
// the backend's first reply usually arrive together).
//
// Writes go ahead (CapWriteAhead granted) while, with the early data, they total at most
// MaxEarlyData: they are written on the control connection and kept, like the early
// data, until settled.
//
// Settling reads the EVENT frame (and whatever follows it in the same read, served by
// the next Reads); with a match the control connection is the data connection. On EOF,
// a reset or a mismatching frame nobody read what went ahead (the backend writes the
// EVENT before reading, or declines and closes the fd unread), so settling dials
// backend_pipe, writes it there once and continues on that connection.
// The wait is bounded by the handoff wait (WithHandoffWait, default 2 s) from Connect;
// when it runs out the read side is shut first, as in adopt, and an EVENT that slipped in
// before that fence makes every call return ErrLateHandoff.
//
// Deadlines set on the wrapper apply to whichever connection serves it and also bound
// the settling itself: a deadline that passes first returns a timeout and settling goes
// on with the next call. Concurrent calls wait for one another while settling.
type lazyConn struct {
	ctl   *net.UnixConn
	n     *wirepb.Negotiated
	until time.Time // end of the handoff wait
	ahead bool      // writes may go ahead of the EVENT

	mu sync.Mutex // held while settling or writing ahead
	// What went out on the control connection before settling, resent on a fallback:
	// the early data (the caller's slice, never modified), then a copy of what was
	// written ahead.
	early, wrote []byte
	aheadLost    bool           // a write ahead found the control connection gone
	ev           []byte         // the EVENT's bytes read so far, and what followed in the same reads
	buf          [eventBuf]byte // ev's first backing array, allocated with the conn
	err          error          // sticky settling failure

	rmu  sync.Mutex
	rest []byte // bytes read behind the EVENT, served before the connection's

	settled atomic.Bool
	closed  atomic.Bool

	dmu      sync.Mutex // guards c and the deadlines below
	c        net.Conn   // the data connection once settled
	rdl, wdl time.Time
}

func newLazyConn(ctl *net.UnixConn, n *wirepb.Negotiated, until time.Time, ahead bool) *lazyConn {
	l := &lazyConn{ctl: ctl, n: n, until: until, ahead: ahead}
	l.ev = l.buf[:0]
	return l
}

// eventBuf is how much one read takes while settling: the EVENT (about 60 bytes) and,
// often, the start of the backend's first reply behind it, in one system call. A longer
// reply is read on by the next Reads.
const eventBuf = 192

// conn settles if needed and returns the data connection; dl is the caller's deadline.
func (l *lazyConn) conn(write bool) (net.Conn, error) {
	if l.settled.Load() {
		return l.c, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled.Load() {
		return l.c, nil
	}
	if l.err != nil {
		return nil, l.err
	}
	l.dmu.Lock()
	dl := l.rdl
	if write {
		dl = l.wdl
	}
	l.dmu.Unlock()
	c, err := l.settle(dl)
	if err != nil {
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) || l.closed.Load() {
			l.err = err // only a caller's own deadline leaves settling resumable
		}
		return nil, err
	}
	l.dmu.Lock()
	l.c = c
	c.SetReadDeadline(l.rdl)
	c.SetWriteDeadline(l.wdl)
	l.settled.Store(true)
	l.dmu.Unlock()
	return c, nil
}

// settle reads the EVENT (resuming a partial one) and returns the data connection.
func (l *lazyConn) settle(callerDL time.Time) (net.Conn, error) {
	fenced := false
	var fenceDL time.Time
	for {
		need := wire.HeaderLen
		if len(l.ev) >= wire.HeaderLen {
			size, err := wire.ParseHeader(l.ev, maxEventBody)
			if err != nil {
				return l.fallback()
			}
			need += int(size)
			if len(l.ev) >= need {
				switch {
				case !matchEvent(l.ev[wire.HeaderLen:need], l.n):
					return l.fallback()
				case fenced:
					l.ctl.Close()
					return nil, ErrLateHandoff
				}
				l.rmu.Lock()
				l.rest = l.ev[need:]
				l.rmu.Unlock()
				return l.ctl, nil
			}
		}
		dl := fenceDL
		if !fenced {
			dl = l.until
			if !callerDL.IsZero() && callerDL.Before(dl) {
				dl = callerDL
			}
		}
		l.ctl.SetReadDeadline(dl)
		if cap(l.ev) < need {
			l.ev = append(make([]byte, 0, need), l.ev...)
		}
		// Past the EVENT is fine: the control connection is ours unless it falls back,
		// and then what followed a mismatching frame does not matter.
		k, err := l.ctl.Read(l.ev[len(l.ev):cap(l.ev)])
		l.ev = l.ev[:len(l.ev)+k]
		var ne net.Error
		switch {
		case err == nil:
		case l.closed.Load():
			return nil, net.ErrClosed
		case !fenced && errors.As(err, &ne) && ne.Timeout() && time.Now().Before(l.until):
			return nil, os.ErrDeadlineExceeded // the caller's deadline; settling resumes
		case !fenced && errors.As(err, &ne) && ne.Timeout():
			fenced = true
			if err := l.ctl.CloseRead(); err != nil {
				return l.fallback()
			}
			fenceDL = time.Now().Add(drainWait)
		default:
			return l.fallback() // EOF, reset, or nothing queued behind the fence
		}
	}
}

// fallback: nobody adopted the control connection, so nobody read the early bytes or
// what was written ahead; they go to backend_pipe, once.
func (l *lazyConn) fallback() (net.Conn, error) {
	l.ctl.Close()
	if l.closed.Load() {
		return nil, net.ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	c, err := dialPipe(ctx, l.n.BackendPipe)
	if err != nil {
		return nil, fmt.Errorf("handoff fallback: %w", err)
	}
	if err := writeEarly(c, append(l.early[:len(l.early):len(l.early)], l.wrote...)); err != nil {
		return nil, fmt.Errorf("handoff fallback: %w", err)
	}
	if l.closed.Load() { // Close ran while we dialled
		c.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *lazyConn) Read(p []byte) (int, error) {
	c, err := l.conn(false)
	if err != nil {
		return 0, err
	}
	l.rmu.Lock()
	if len(l.rest) > 0 {
		n := copy(p, l.rest)
		l.rest = l.rest[n:]
		l.rmu.Unlock()
		return n, nil
	}
	l.rmu.Unlock()
	return c.Read(p)
}

func (l *lazyConn) Write(p []byte) (int, error) {
	if l.ahead && !l.settled.Load() {
		if n, done, err := l.writeAhead(p); done {
			return n, err
		}
	}
	c, err := l.conn(true)
	if err != nil {
		return 0, err
	}
	return c.Write(p)
}

// writeAhead writes p on the control connection before the EVENT, keeping a copy for a
// fallback; done false: settle first (settled meanwhile, a settling failure to report,
// or past MaxEarlyData).
func (l *lazyConn) writeAhead(p []byte) (n int, done bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled.Load() || l.err != nil || l.aheadLost || len(l.early)+len(l.wrote)+len(p) > MaxEarlyData {
		return 0, false, nil
	}
	l.dmu.Lock()
	l.ctl.SetWriteDeadline(l.wdl)
	l.dmu.Unlock()
	n, err = l.ctl.Write(p)
	var ne net.Error
	switch {
	case err == nil:
	case l.closed.Load() || errors.Is(err, net.ErrClosed):
		return 0, true, net.ErrClosed // closed by the caller, not lost
	case errors.As(err, &ne) && ne.Timeout():
		// The caller's deadline: what went out is queued, the rest is the caller's.
		l.wrote = append(l.wrote, p[:n]...)
		return n, true, err
	default:
		// The connection is gone (the backend declined and the broker let go, or the
		// broker failed): nobody reads what is queued there. Settling falls back and
		// sends all of it, p included.
		l.aheadLost, n, err = true, len(p), nil
	}
	l.wrote = append(l.wrote, p...)
	return n, true, err
}

// CloseWrite settles, then shuts the write side of the data connection.
func (l *lazyConn) CloseWrite() error {
	c, err := l.conn(true)
	if err != nil {
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write: not supported")
}

// Close closes the connection, also while another call is settling.
func (l *lazyConn) Close() error {
	if l.closed.Swap(true) {
		return net.ErrClosed
	}
	l.dmu.Lock()
	c := l.c
	l.dmu.Unlock()
	err := l.ctl.Close() // unblocks a settling read; closed already after a fallback
	if c != nil && c != net.Conn(l.ctl) {
		err = c.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
