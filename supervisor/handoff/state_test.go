package handoff

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
)

// socketPair returns a connected pair of real Unix stream sockets.
func socketPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// Every legal state change, and every other one refused: state kept, an error wrapping
// errIllegalMove, a bug counted, the connection left open. Moving to closed closes the
// connection (the peer reads EOF).
func TestSpareTransitions(t *testing.T) {
	legalMoves := map[spareState][]spareState{
		dialling:    {probing, idle, lent, closed},
		probing:     {idle, closed},
		idle:        {lent, held, closed},
		owing:       {settling, closed},
		settling:    {idle, owing, lent, held, closed},
		held:        {lent, idle, closed},
		lent:        {awaitingAck, owing, idle, closed},
		awaitingAck: {idle, closed},
		closed:      nil,
	}
	if len(legalMoves) != int(numStates) {
		t.Fatalf("table covers %d of %d states", len(legalMoves), numStates)
	}
	for from := range numStates + 1 { // one past the last: not a state at all
		for to := range numStates + 1 {
			want := false
			for _, s := range legalMoves[from] {
				want = want || s == to
			}
			t.Run(from.String()+"->"+to.String(), func(t *testing.T) {
				d := New(Options{Log: zerolog.Nop()})
				c, peer := socketPair(t)
				s := &spare{c: c, state: from}
				err := d.move(s, to)
				if want {
					if err != nil || s.state != to || d.Stats().Bugs != 0 {
						t.Fatalf("legal move: %v, state %v, %d bugs", err, s.state, d.Stats().Bugs)
					}
				} else if !errors.Is(err, errIllegalMove) || s.state != from || d.Stats().Bugs != 1 {
					t.Fatalf("illegal move: %v, state %v, %d bugs", err, s.state, d.Stats().Bugs)
				}
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if want && to == closed {
					if n, err := peer.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
						t.Fatalf("closing did not close the connection: %d, %v", n, err)
					}
					return
				}
				if _, err := c.Write([]byte{1}); err != nil {
					t.Fatalf("connection closed by a move to %v: %v", to, err)
				}
			})
		}
	}
}

// stocked follows the spare through its life: pooled, held and settling spares count,
// so do lent and awaiting ones on a connection the backend reuses; a fresh dial, a
// probe, a one-shot (v1) handoff and a closed spare do not.
func TestSpareStocked(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		d := New(Options{Log: zerolog.Nop()})
		s := &spare{state: dialling, ext: wire.HandoffExt{Reuse: reuse, Relayed: reuse}}
		inFlight := map[bool]int{false: 0, true: 1}[reuse]
		steps := []struct {
			to   spareState
			want int
		}{
			{probing, 0}, {idle, 1}, {lent, inFlight}, {owing, 1}, {settling, 1}, {held, 1},
			{lent, inFlight}, {awaitingAck, inFlight}, {idle, 1}, {held, 1}, {idle, 1}, {closed, 0},
		}
		for i, st := range steps {
			if err := d.move(s, st.to); err != nil {
				t.Fatalf("reuse %v, step %d: %v", reuse, i, err)
			}
			if d.stocked != st.want {
				t.Fatalf("reuse %v, step %d to %v: stocked %d, want %d", reuse, i, st.to, d.stocked, st.want)
			}
		}
		// A refused move changes nothing.
		if err := d.move(s, idle); err == nil || d.stocked != 0 {
			t.Fatalf("closed -> idle: %v, stocked %d", err, d.stocked)
		}
	}
}
