package handoff_test

import (
	"context"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// A prepared handoff uses the spare taken before Negotiated; one that is never handed
// off (the Negotiated write failed) gives its spare back to the pool.
func TestHandoffPrepared(t *testing.T) {
	dir := testutil.ShortDir(t)
	be := handofftest.Start(t, handofftest.Echo, dir, -1)
	p := newPairs(t, dir)
	d := running(t, be, 2)
	ctx := context.Background()
	for i := range 4 {
		tok, id := d.Issue(), uint64(20+i)
		pr := d.Prepare(ctx, req(tok, id, false))
		if st := d.Stats(); st.Spares != 1 || st.Held != 1 {
			t.Fatalf("prepared: %+v, want one spare held", st)
		}
		bc, cc := p.pair()
		if err := d.HandoffPrepared(ctx, bc, pr); err != nil {
			t.Fatal(err)
		}
		readRelay(t, cc, tok, id)
		echoRoundTrip(t, cc, "prepared")
		cc.Close()
		if st := d.Stats(); st.Spares != 2 || st.Held != 0 {
			t.Fatalf("after the handoff: %+v", st)
		}
	}
	d.Prepare(ctx, req(d.Issue(), 99, false)) // never handed off
	if st := d.Stats(); st.Held != 1 {
		t.Fatalf("prepared: %+v", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := d.Stats(); st.Held != 0 || st.Spares != 2; st = d.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("held spare never returned: %+v", d.Stats())
		}
		d.Kick()
		time.Sleep(10 * time.Millisecond)
	}
}

// Spares that carry a handoff come back to the pool: a refill racing a handoff (Run
// woken by a kick, or its tick) must not dial a spare for each one in use, only to
// close the surplus when it returns. Prepared handoffs, as the broker makes them, one
// after another, each with a refill pass: the pool is dialled once, give or take a
// refill that lands in the instant a spare moves between the pool and a handoff
// (counting only the pool, this test saw about 50 dials).
func TestHandoffNoSurplusDials(t *testing.T) {
	dir := testutil.ShortDir(t)
	be := handofftest.Start(t, handofftest.Echo, dir, -1)
	p := newPairs(t, dir)
	d := running(t, be, 2)
	ctx := context.Background()
	for i := range 300 {
		bc, cc := p.pair()
		id := uint64(i + 1)
		tok := d.Issue()
		pr := d.Prepare(ctx, req(tok, id, true))
		d.Kick() // a refill pass while the spare is out, as a concurrent handoff's kick would
		if err := d.HandoffPrepared(ctx, bc, pr); err != nil {
			t.Fatal(err)
		}
		readRelay(t, cc, tok, id)
		cc.Close()
	}
	if st := d.Stats(); st.Dials > 4 || st.Handoffs != 300 {
		t.Fatalf("stats %+v: want the 2 spares dialled once (a surplus dial or two at most), reused 300 times", st)
	}
}
