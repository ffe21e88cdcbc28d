package handoff

import (
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Lazy acks (ours, no new wire field): a spare whose backend has acked relay and reuse
// has proven that it writes the EVENT itself and declines by closing the client's fd
// unread, so the client settles its handoff without the broker. The broker then sends
// fd and offer and returns at once; the ack waits in the spare's socket and is read
// before the spare carries its next offer, or by Run's maintenance pass. A decline found
// then is logged and counted (the client has fallen back to backend_pipe by itself).
//
// A quiet exchange (offer field 19, docs/protocol.md "Extensions (ours)") goes further: the backend answers only a decline, so no
// ack is read after an accepted one. Before the spare is used again, one poll that
// finds nothing to read settles it; a decline found there is read and counted as above. The
// spare may carry the next exchange before the backend has even read the previous one:
// it reads them in order, and if it declines the first it closes the connection, the
// descriptor queued behind is closed with it, and that client sees EOF and falls back.

// lazyAck is the exchange whose ack is still queued on a spare (or, quiet, would be
// queued if it was declined).
type lazyAck struct {
	token  []byte
	connID uint64
	sent   time.Time
	quiet  bool
}

// errNoLazyAck: the backend did not answer a lazy exchange within AckTimeout.
var errNoLazyAck = errors.New("no ack for a handoff sent without waiting")

// settle reads the ack queued on s, which is settling. With wait false it only reads an
// ack that is already there, in one system call (ready false: not there yet, s
// untouched). ok: accepted, s is reusable and its ack cleared, for the caller to move on;
// s.checked says nothing followed the ack. Otherwise s is closed and the failure logged
// and counted.
func (d *Dispatcher) settle(s *spare, wait bool) (ready, ok bool) {
	a := s.ack
	var body []byte
	var err error
	if wait && !a.quiet {
		s.c.SetReadDeadline(a.sent.Add(d.o.AckTimeout))
		body, err = wire.ReadFrameBody(s.c, wire.MaxHandoffBody)
	} else {
		if a.quiet && silent(s.c) {
			s.checked = true // not declined so far: nothing to read
			return true, true
		}
		var again bool
		body, again, err = d.tryAck(s)
		switch {
		case again && a.quiet:
			s.checked = true
			return true, true
		case again && time.Since(a.sent) < d.o.AckTimeout:
			return false, false
		case again:
			err = errNoLazyAck
		}
	}
	if a.quiet && errors.Is(err, io.EOF) {
		// Hung up without declining: the backend is going away, nothing failed.
		d.move(s, closed)
		return true, false
	}
	if err != nil {
		d.lateFailure(s, fmt.Errorf("read ack: %w", err))
		return true, false
	}
	got, err := wire.ParseHandoffAckExt(body, wirepb.FrameKind_RESPONSE, a.token, a.connID)
	if err == nil && !(got.Reuse && got.Relayed) {
		err = errors.New("lazy ack without relay and reuse")
	}
	if err != nil {
		d.lateFailure(s, err)
		return true, false
	}
	s.c.SetReadDeadline(time.Time{})
	s.ack, s.ext, s.checked = nil, got, !wait
	return true, true
}

// ackBuf holds an ack with room to spare: a few dozen bytes.
const ackBuf = 256

// tryAck reads the queued ack without waiting; again: nothing there yet. Anything after
// the ack is an error: the backend writes nothing else before the next offer.
func (d *Dispatcher) tryAck(s *spare) (body []byte, again bool, err error) {
	rc, err := s.c.SyscallConn()
	if err != nil {
		return nil, false, err
	}
	buf := make([]byte, ackBuf)
	n := 0
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return true
	}); err != nil {
		return nil, false, err
	}
	switch {
	case rerr == unix.EAGAIN:
		return nil, true, nil
	case rerr != nil:
		return nil, false, rerr
	case n == 0:
		return nil, false, io.EOF
	case n < wire.HeaderLen:
		s.c.SetReadDeadline(time.Now().Add(d.o.AckTimeout))
		k, err := io.ReadFull(s.c, buf[n:wire.HeaderLen])
		n += k
		if err != nil {
			return nil, false, err
		}
	}
	size, err := wire.ParseHeader(buf, wire.MaxHandoffBody)
	if err != nil {
		return nil, false, fmt.Errorf("ack: %w", err)
	}
	need := wire.HeaderLen + int(size)
	switch {
	case n > need:
		return nil, false, fmt.Errorf("%d bytes after the ack", n-need)
	case n < need:
		if need > len(buf) {
			buf = append(buf[:n], make([]byte, need-n)...)
		}
		s.c.SetReadDeadline(time.Now().Add(d.o.AckTimeout))
		if _, err := io.ReadFull(s.c, buf[n:need]); err != nil {
			return nil, false, err
		}
	}
	return buf[wire.HeaderLen:need], false, nil
}

// lateFailure closes s and records that the handoff sent on it without waiting failed.
func (d *Dispatcher) lateFailure(s *spare, err error) {
	d.move(s, closed)
	d.handoffs.Add(^uint64(0)) // counted as a handoff when it was sent
	d.failures.Add(1)
	d.lateFailures.Add(1)
	d.o.Log.Warn().Err(err).Str("event", "handoff_failed_late").Uint64("connection_id", s.ack.connID).
		Int("pid", s.pid).Str("endpoint", d.o.Endpoint).
		Msg("handoff sent without waiting failed; the client fell back to backend_pipe")
}

// settlePool reads the acks queued on pooled spares (Run's maintenance pass), so that a
// decline is counted even when the spare is not used again soon. A quiet spare is taken
// out only when something came (a decline, or a hang-up): polling it in place keeps the
// silent ones available, where taking them all out for the pass would leave a
// concurrent early handoff without a proven spare.
func (d *Dispatcher) settlePool() {
	d.mu.Lock()
	var pending []*spare
	keep := d.pool[:0]
	for _, s := range d.pool {
		if s.ack != nil && (!s.ack.quiet || !silent(s.c)) && d.moveLocked(s, settling) == nil {
			pending = append(pending, s)
		} else {
			keep = append(keep, s)
		}
	}
	clear(d.pool[len(keep):])
	d.pool = keep
	d.mu.Unlock()
	for _, s := range pending {
		ready, ok := d.settle(s, false)
		if ok || !ready {
			s.checked = false // it may sit in the pool for a while: take polls it
			d.put(s)
		}
	}
}
