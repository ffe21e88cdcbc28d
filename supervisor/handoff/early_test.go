package handoff_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// Early data is granted only once a spare has proven, by its probe answer, that the
// backend relays the EVENT; an early handoff then delivers the bytes the client wrote before the
// EVENT exactly once, behind the EVENT. Without a proven spare, an early handoff fails
// before any fd leaves and the client sees its connection end.
func TestHandoffEarlyData(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.NoAck, handofftest.V1)
	echo, noack, v1 := bes[handofftest.Echo], bes[handofftest.NoAck], bes[handofftest.V1]
	p := newPairs(t, dir)

	cases := []struct {
		name      string
		be        *handofftest.Backend
		wantEarly bool // EarlyData() once spares are dialled, before any handoff
	}{
		{"extensions: proven by the probe", echo, true},
		{"v1 backend: never", v1, false},
		{"backend never acks: never", noack, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := handoff.New(handoff.Options{Endpoint: tc.be.Handoff, ExpectPID: pidOf(tc.be), Spares: 2,
				AckTimeout: 100 * time.Millisecond, Log: zerolog.Nop()})
			run(t, d)
			waitSpares(t, d, 2)
			if got := d.EarlyData(); got != tc.wantEarly {
				t.Fatalf("EarlyData() = %v once spares are dialled, want %v", got, tc.wantEarly)
			}
			if !tc.wantEarly {
				// Early handoff with nothing proven: fails before sending the fd.
				bc, cc := p.pair()
				cc.Write([]byte("x"))
				if err := d.Handoff(context.Background(), bc, req(d.Issue(), 1, true)); !errors.Is(err, handoff.ErrNoRelaySpare) {
					t.Fatalf("unproven early handoff: %v", err)
				}
				if b, _ := io.ReadAll(cc); len(b) != 0 {
					t.Fatalf("client got %q", b)
				}
				cc.Close()
			}

			bc, cc := p.pair()
			tok := d.Issue()
			err := d.Handoff(context.Background(), bc, req(tok, 2, false))
			if tc.be == noack {
				if err == nil {
					t.Fatal("no-ack backend: handoff succeeded")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				readRelay(t, cc, tok, 2)
				echoRoundTrip(t, cc, "plain")
			}
			cc.Close()
			if got := d.EarlyData(); got != tc.wantEarly {
				t.Fatalf("EarlyData() = %v after one handoff, want %v", got, tc.wantEarly)
			}
			if !tc.wantEarly {
				return
			}
			for i := range 3 {
				bc, cc := p.pair()
				if _, err := cc.Write([]byte("early!")); err != nil {
					t.Fatal(err)
				}
				tok := d.Issue()
				id := uint64(10 + i)
				if err := d.Handoff(context.Background(), bc, req(tok, id, true)); err != nil {
					t.Fatal(err)
				}
				readRelay(t, cc, tok, id)
				got := make([]byte, 6)
				if _, err := io.ReadFull(cc, got); err != nil || string(got) != "early!" {
					t.Fatalf("echo of early data %q, %v", got, err)
				}
				echoRoundTrip(t, cc, "after")
				cc.CloseWrite()
				if rest, err := io.ReadAll(cc); err != nil || len(rest) != 0 {
					t.Fatalf("after the echo: %q, %v (early data must arrive once)", rest, err)
				}
				cc.Close()
			}
			if st := d.Stats(); st.Early != 3 || st.Handoffs != 4 || st.Failures != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
