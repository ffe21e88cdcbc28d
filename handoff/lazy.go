package handoff

import (
	"errors"
	"fmt"
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

// lazyAck is the exchange whose ack is still queued on a spare.
type lazyAck struct {
	token  []byte
	connID uint64
	sent   time.Time
}

// errNoLazyAck: the backend did not answer a lazy exchange within AckTimeout.
var errNoLazyAck = errors.New("no ack for a handoff sent without waiting")

// settle reads the ack queued on s. With wait false it only reads an ack that is already
// readable (ready false: not there yet, s untouched). ok: accepted, s is reusable and its
// ack cleared. Otherwise s is closed and the failure logged and counted.
func (d *Dispatcher) settle(s *spare, wait bool) (ready, ok bool) {
	a := s.ack
	if !wait && !readable(s) {
		if time.Since(a.sent) < d.o.AckTimeout {
			return false, false
		}
		d.lateFailure(s, errNoLazyAck)
		return true, false
	}
	dl := a.sent.Add(d.o.AckTimeout)
	if !wait {
		dl = time.Now().Add(d.o.AckTimeout) // the ack is there, or its first bytes are
	}
	s.c.SetReadDeadline(dl)
	body, err := wire.ReadFrameBody(s.c, maxControlBody)
	if err != nil {
		d.lateFailure(s, fmt.Errorf("read ack: %w", err))
		return true, false
	}
	got, err := ParseAckExt(body, wirepb.FrameKind_RESPONSE, a.token, a.connID)
	if err == nil && !(got.Reuse && got.Relayed) {
		err = errors.New("lazy ack without relay and reuse")
	}
	if err != nil {
		d.lateFailure(s, err)
		return true, false
	}
	s.c.SetReadDeadline(time.Time{})
	s.ack, s.ext = nil, got
	return true, true
}

// lateFailure closes s and records that the handoff sent on it without waiting failed.
func (d *Dispatcher) lateFailure(s *spare, err error) {
	s.c.Close()
	d.handoffs.Add(^uint64(0)) // counted as a handoff when it was sent
	d.failures.Add(1)
	d.lateFailures.Add(1)
	d.o.Log.Warn().Err(err).Str("event", "handoff_failed_late").Uint64("connection_id", s.ack.connID).
		Int("pid", s.pid).Str("endpoint", d.o.Endpoint).
		Msg("handoff sent without waiting failed; the client fell back to backend_pipe")
}

// settlePool reads the acks queued on pooled spares (Run's maintenance pass), so that a
// decline is counted even when the spare is not used again soon.
func (d *Dispatcher) settlePool() {
	d.mu.Lock()
	var pending []spare
	keep := d.pool[:0]
	for _, s := range d.pool {
		if s.ack != nil {
			pending = append(pending, s)
		} else {
			keep = append(keep, s)
		}
	}
	clear(d.pool[len(keep):])
	d.pool = keep
	d.mu.Unlock()
	for _, s := range pending {
		if ready, ok := d.settle(&s, false); ok || !ready {
			d.put(s)
		}
	}
}

// readable polls s without blocking.
func readable(s *spare) bool {
	rc, err := s.c.SyscallConn()
	if err != nil {
		return true // let the read report it
	}
	r := true
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(p, 0)
		r = err != nil || n > 0
	})
	return r
}
