package handoff

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rpbroker/broker/wire"
)

// spare is one connection to the handoff endpoint. Its state says who owns it and what it
// may do next; move is the only place that changes it. ext is what the backend last
// proved on it (zero for a fresh dial): Reuse, that it reads further exchanges (token and
// offer may share one sendmsg); Relayed, that it writes the EVENT itself (early data may
// be granted, see Grant).
type spare struct {
	c     *net.UnixConn // nil while dialling
	pid   int
	at    time.Time
	ext   wire.HandoffExt
	state spareState
	// counted: included in Dispatcher.stocked. Set by move only.
	counted bool
	ack     *lazyAck // owing: the last exchange, whose ack is still to come (lazy.go)
	// checked: its ack was just read, or found not sent, and nothing followed, so
	// usable need not poll it.
	checked bool
}

// spareState is where a spare is in its life. The pool holds idle and owing spares only.
type spareState uint8

const (
	dialling    spareState = iota // connecting and verifying the peer (dial)
	probing                       // fresh, its capability probe in flight (probe.go)
	idle                          // pooled, nothing owed: ready for an offer
	owing                         // pooled, its last handoff sent lazily: its ack is still to be read (lazy.go)
	settling                      // out of the pool while its owed ack is read
	held                          // taken by Prepare for one handoff, ahead of Negotiated
	lent                          // carrying a handoff: token, fd and offer being sent
	awaitingAck                   // offer sent, the broker waits for the backend's ack
	closed                        // its connection is closed; final
	numStates
)

func (s spareState) String() string {
	switch s {
	case dialling:
		return "dialling"
	case probing:
		return "probing"
	case idle:
		return "idle"
	case owing:
		return "owing"
	case settling:
		return "settling"
	case held:
		return "held"
	case lent:
		return "lent"
	case awaitingAck:
		return "awaitingAck"
	case closed:
		return "closed"
	}
	return fmt.Sprintf("spareState(%d)", uint8(s))
}

// legal reports whether a spare may move from one state to the other. Every live state
// may be closed; closed is final, so closing twice is a bug.
func legal(from, to spareState) bool {
	if to == closed {
		return from < closed
	}
	switch from {
	case dialling: // plain (backend known as v1) to the pool, or dialled inline for a handoff
		return to == probing || to == idle || to == lent
	case probing:
		return to == idle
	case idle:
		return to == lent || to == held
	case owing:
		return to == settling
	case settling: // ack read: to the pool or to whoever took it; not there yet: still owing
		return to == idle || to == owing || to == lent || to == held
	case held: // claimed by its handoff, or released unused
		return to == lent || to == idle
	case lent: // sent lazily: owing; offer not encodable or held for another pid: unused
		return to == awaitingAck || to == owing || to == idle
	case awaitingAck: // acked with reuse: back to the pool
		return to == idle
	}
	return false
}

// errIllegalMove: a spare was asked to change state in a way its life does not allow.
var errIllegalMove = errors.New("illegal spare state change")

// stockedIn reports whether a spare in state st counts towards Options.Spares: pooled,
// or soon back in the pool (held, settling, carrying a handoff on a connection its
// backend reuses). Counting only the pool would dial a spare for each one in use and close
// the surplus when it came back: a dial and a probe per handoff, at worst.
func (s *spare) stockedIn(st spareState) bool {
	switch st {
	case idle, owing, settling, held:
		return true
	case lent, awaitingAck:
		return s.ext.Reuse
	}
	return false
}

// moveLocked is the only place a spare changes state; d.mu is held. It keeps
// d.stocked and closes the connection on the way to closed. An illegal move leaves s
// as it was, is counted in Stats.Bugs and logged, and returns an error wrapping
// errIllegalMove.
func (d *Dispatcher) moveLocked(s *spare, to spareState) error {
	if !legal(s.state, to) {
		d.bugs.Add(1)
		err := fmt.Errorf("spare to pid %d: %v -> %v: %w", s.pid, s.state, to, errIllegalMove)
		d.o.Log.Error().Err(err).Str("endpoint", d.o.Endpoint).Msg("handoff spare state machine")
		return err
	}
	s.state = to
	if in := s.stockedIn(to); in != s.counted {
		s.counted = in
		if in {
			d.stocked++
		} else {
			d.stocked--
		}
	}
	if to == closed && s.c != nil {
		s.c.Close()
	}
	return nil
}

// move is moveLocked for a caller that does not hold d.mu.
func (d *Dispatcher) move(s *spare, to spareState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.moveLocked(s, to)
}
