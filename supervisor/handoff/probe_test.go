package handoff_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Run proves fresh spares by a probe: against our SDK the very first client is granted
// early data and handed off; a strict v1 backend declines the probe once, is never
// probed again however many spares are dialled, never gets an early handoff, and still
// takes plain ones.
func TestHandoffProbe(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.V1)
	echo, v1 := bes[handofftest.Echo], bes[handofftest.V1]
	p := newPairs(t, dir)
	cases := []struct {
		name   string
		be     *handofftest.Backend
		early  bool // EarlyData() at once; the first handoff is early
		probes uint64
		quiet  uint64 // handoffs sent quiet (no ack unless declined)
	}{
		{"sdk backend: first client granted", echo, true, 1, 5},
		{"v1 backend: declined once, plain handoffs", v1, false, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := handoff.New(handoff.Options{Endpoint: tc.be.Handoff, ExpectPID: pidOf(tc.be), Spares: 2, Log: zerolog.Nop()})
			run(t, d)
			waitSpares(t, d, 2)
			if got := d.EarlyData(); got != tc.early {
				t.Fatalf("EarlyData() = %v with fresh spares, want %v", got, tc.early)
			}
			if !tc.early {
				bc, cc := p.pair()
				if err := d.Handoff(context.Background(), bc, req(d.Issue(), 1, true)); !errors.Is(err, handoff.ErrNoRelaySpare) {
					t.Fatalf("early handoff: %v, want ErrNoRelaySpare", err)
				}
				cc.Close()
			}
			for i := range 5 {
				bc, cc := p.pair()
				msg := "plain"
				if tc.early {
					msg = "early"
					if _, err := cc.Write([]byte(msg)); err != nil {
						t.Fatal(err)
					}
				}
				tok := d.Issue()
				id := uint64(10 + i)
				if err := d.Handoff(context.Background(), bc, req(tok, id, tc.early)); err != nil {
					t.Fatalf("handoff %d: %v", i, err)
				}
				readRelay(t, cc, tok, id)
				if tc.early {
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(cc, got); err != nil || string(got) != msg {
						t.Fatalf("early data echoed %q, %v", got, err)
					}
				}
				echoRoundTrip(t, cc, "after")
				cc.Close()
				waitSpares(t, d, 2) // v1 spares are used up: Run dials new ones
			}
			st := d.Stats()
			// SDK spares are reused (one probe each, two dials); v1 ones are not.
			wantProbes := tc.probes
			if tc.early {
				wantProbes = st.Dials
			}
			if st.Probes != wantProbes || st.Failures != map[bool]uint64{true: 0, false: 1}[tc.early] || st.Quiet != tc.quiet {
				t.Fatalf("stats %+v, want %d probes, %d quiet", st, wantProbes, tc.quiet)
			}
			if tc.be == v1 {
				if st.Dials < 7 {
					t.Fatalf("stats %+v: v1 spares serve one handoff each", st)
				}
				if n := strings.Count(v1.Stderr(), "nofd"); n != 1 {
					t.Fatalf("v1 backend saw %d probes, want 1:\n%s", n, v1.Stderr())
				}
			}
		})
	}
}

// A probe answer proves quiet only when it echoes it: an ext backend that does not know
// quiet (no field 19) still gets lazy acks, just not quiet offers.
func TestParseProbeAckQuiet(t *testing.T) {
	zero := make([]byte, wire.HandoffTokenLen)
	for _, quiet := range []bool{false, true} {
		b, err := wire.HandoffAckFrameExt(wirepb.FrameKind_RESPONSE, 0, &wirepb.HandoffAck{Token: zero, ErrorDetail: "capability probe"},
			wire.HandoffExt{Relayed: true, Reuse: true, Probe: true, Quiet: quiet})
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.ParseHandoffProbeAck(b[wire.HeaderLen:])
		if err != nil || got != (wire.HandoffExt{Relayed: true, Reuse: true, Probe: true, Quiet: quiet}) {
			t.Fatalf("answer with quiet=%v parsed as %+v, %v", quiet, got, err)
		}
	}
}

// A backend found v1 is probed again once Options.Reprobe has passed (a probe that
// merely timed out must not cost a backend our extensions until it restarts); within
// Reprobe it is not (TestHandoffProbe counts one probe for the v1 backend).
func TestHandoffReprobe(t *testing.T) {
	dir := testutil.ShortDir(t)
	v1 := handofftest.Start(t, handofftest.V1, dir, -1)
	p := newPairs(t, dir)
	d := handoff.New(handoff.Options{Endpoint: v1.Handoff, ExpectPID: pidOf(v1), Spares: 1, Reprobe: time.Nanosecond, Log: zerolog.Nop()})
	run(t, d)
	for i := range 3 {
		waitSpares(t, d, 1) // v1 spares serve one handoff each: Run dials the next
		bc, cc := p.pair()
		tok := d.Issue()
		id := uint64(i + 1)
		if err := d.Handoff(context.Background(), bc, req(tok, id, false)); err != nil {
			t.Fatalf("handoff %d: %v", i, err)
		}
		readRelay(t, cc, tok, id)
		cc.Close()
	}
	if st := d.Stats(); st.Probes < 3 {
		t.Fatalf("stats %+v: want each fresh spare probed again", st)
	}
}
