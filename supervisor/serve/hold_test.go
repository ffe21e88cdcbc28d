package serve

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// A held loop takes no connection off its listener, which stays open: a client that
// connects and sends its Hello meanwhile waits in the backlog, unanswered and not
// refused, and is answered once the loop is released. Several holds and releases in a row
// leave the loop serving.
func TestHoldKeepsClientsInTheBacklog(t *testing.T) {
	defs := mapDefs{"zc": {Def: zcDef, Found: true}}
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, defs, nil)
	raw := frameBytes(t, helloFrame(t, goodHello()))
	for round := range 3 {
		if err := h.loop.Hold(context.Background()); err != nil {
			t.Fatal(err)
		}
		c := h.dial() // connect succeeds: the listener is open, the backlog takes it
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := wire.ReadFrame(c, wire.MaxFrameBody); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: a held loop answered (%v)", round, err)
		}
		if n := h.loop.ConnectionsOpen(); n != 0 {
			t.Fatalf("round %d: %d connections accepted while held", round, n)
		}
		h.loop.Release()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := wire.ReadFrame(c, wire.MaxFrameBody)
		if err != nil {
			t.Fatalf("round %d: no answer after release: %v", round, err)
		}
		var hr wirepb.HelloReply
		if err := proto.Unmarshal(f.Payload, &hr); err != nil || hr.GetNegotiated() == nil {
			t.Fatalf("round %d: after release got %v (%v)", round, &hr, err)
		}
		c.Close()
	}
	// Released: it serves as before, and a hold of a stopped loop returns at once.
	if hr := h.helloReply(raw); hr.GetNegotiated() == nil {
		t.Fatalf("after the holds: %v", hr)
	}
	h.cancel()
	err := <-h.done
	h.done <- err // for the cleanup's stop
	if err := h.loop.Hold(context.Background()); err != nil {
		t.Fatalf("Hold of a stopped loop: %v", err)
	}
}

func TestConnectionIDsResume(t *testing.T) {
	s := NewShared(nil, nil)
	s.ResumeConnectionIDs(41)
	if id := s.NextConnectionID(); id != 42 || s.LastConnectionID() != 42 {
		t.Fatalf("next id %d, last %d; want 42, 42", id, s.LastConnectionID())
	}
}
