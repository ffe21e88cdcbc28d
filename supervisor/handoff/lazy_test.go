package handoff_test

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// On a spare proven to relay and reuse, the broker sends without waiting for the ack
// (and, quiet, our SDK sends none unless it declines). A backend that declines such a
// handoff closes the client's fd unread (the client sees EOF and falls back by itself);
// the broker counts the decline when it next takes that spare, and never offers on it
// again.
func TestHandoffLazyAckDeclined(t *testing.T) {
	dir := testutil.ShortDir(t)
	be := handofftest.Start(t, handofftest.Alternate, dir, -1) // accepts, declines, accepts...
	p := newPairs(t, dir)
	// One spare: step 3 finds no other proven spare once the decline is read.
	d := running(t, be, 1)

	// 1: lazy at once: the probe proved the spare before any client.
	bc, cc := p.pair()
	tok := d.Issue()
	if err := d.Handoff(context.Background(), bc, req(tok, 1, false)); err != nil {
		t.Fatal(err)
	}
	readRelay(t, cc, tok, 1)
	echoRoundTrip(t, cc, "sync")
	cc.Close()
	if st := d.Stats(); st.Lazy != 1 || st.Quiet != 1 || st.Probes != 1 || !d.EarlyData() {
		t.Fatalf("after the first handoff: %+v, early data %v", st, d.EarlyData())
	}

	// 2: lazy on the proven spare; the backend declines behind the broker's back.
	bc, cc = p.pair()
	if _, err := cc.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	if err := d.Handoff(context.Background(), bc, req(d.Issue(), 2, true)); err != nil {
		t.Fatalf("lazy handoff: %v", err)
	}
	// Closed with the early bytes unread: EOF or a reset, never an EVENT.
	if b, err := io.ReadAll(cc); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(b) != 0 {
		t.Fatalf("declined client got %q, %v; want EOF or reset, nothing read", b, err)
	}
	cc.Close()
	if st := d.Stats(); st.Lazy != 2 || st.Quiet != 2 {
		t.Fatalf("not sent lazily: %+v", st)
	}

	// 3: the next early handoff takes that spare, reads the decline first, drops it.
	bc, cc = p.pair()
	defer cc.Close()
	err := d.Handoff(context.Background(), bc, req(d.Issue(), 3, true))
	if !errors.Is(err, handoff.ErrNoRelaySpare) {
		t.Fatalf("early handoff after the decline: %v, want ErrNoRelaySpare", err)
	}
	st := d.Stats()
	if st.LateFailures != 1 || st.Handoffs != 1 || st.Failures != 2 {
		t.Fatalf("stats %+v: want the lazy decline counted", st)
	}
}

// A quiet spare whose backend hangs up without declining (it exited) is dropped when
// next taken, and nothing is counted as failed: its last handoff was accepted.
func TestHandoffQuietHangUpIsNoFailure(t *testing.T) {
	dir := testutil.ShortDir(t)
	be := handofftest.Start(t, handofftest.Echo, dir, -1)
	p := newPairs(t, dir)
	d := running(t, be, 1)
	bc, cc := p.pair()
	tok := d.Issue()
	if err := d.Handoff(context.Background(), bc, req(tok, 1, true)); err != nil {
		t.Fatal(err)
	}
	readRelay(t, cc, tok, 1)
	cc.Close()
	if err := be.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	be.Cmd.Wait()

	bc, cc = p.pair()
	defer cc.Close()
	if err := d.Handoff(context.Background(), bc, req(d.Issue(), 2, true)); !errors.Is(err, handoff.ErrNoRelaySpare) {
		t.Fatalf("handoff after the backend exited: %v, want ErrNoRelaySpare", err)
	}
	if st := d.Stats(); st.Quiet != 1 || st.LateFailures != 0 || st.Handoffs != 1 {
		t.Fatalf("stats %+v: the accepted quiet handoff must stay counted as one", st)
	}
}
