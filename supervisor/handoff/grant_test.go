package handoff_test

import (
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// Grant over every combination of capability bits 0, 1 and 2 and every backend mode:
// a token only with bit 0 and a backend a handoff can reach; bits 1 and 2 only with it,
// and only to a backend proven to relay; a bit-1 client that cannot be granted gets no
// token, a bit-2 client a plain one.
func TestGrant(t *testing.T) {
	none := handoff.Decision{}
	plain := handoff.Decision{Token: true}
	with := func(caps uint64) handoff.Decision { return handoff.Decision{Token: true, Caps: caps} }
	modes := []handoff.Mode{handoff.ModeOff, handoff.ModeNoBackend, handoff.ModePlain, handoff.ModeRelay, handoff.ModeQuiet}
	table := []struct {
		caps uint64
		want [5]handoff.Decision // by mode, in the order of modes
	}{
		{0b000, [5]handoff.Decision{none, none, none, none, none}},
		{0b001, [5]handoff.Decision{none, none, plain, plain, plain}},
		{0b010, [5]handoff.Decision{none, none, none, none, none}},
		{0b011, [5]handoff.Decision{none, none, none, with(0b010), with(0b010)}},
		{0b100, [5]handoff.Decision{none, none, none, none, none}},
		{0b101, [5]handoff.Decision{none, none, plain, with(0b100), with(0b100)}},
		{0b110, [5]handoff.Decision{none, none, none, none, none}},
		{0b111, [5]handoff.Decision{none, none, none, with(0b110), with(0b110)}},
	}
	for _, row := range table {
		for i, m := range modes {
			t.Run(fmt.Sprintf("caps=%03b/%v", row.caps, m), func(t *testing.T) {
				if got := handoff.Grant(row.caps, m); got != row.want[i] {
					t.Fatalf("Grant(%03b, %v) = %+v, want %+v", row.caps, m, got, row.want[i])
				}
				// Bits the client did not set are never granted, nor bits beyond 2.
				if got := handoff.Grant(row.caps|0b1000, m); got != row.want[i] {
					t.Fatalf("Grant(%04b, %v) = %+v, want %+v", row.caps|0b1000, m, got, row.want[i])
				}
			})
		}
	}
}

// A dispatcher's Mode is what its spares proved against a real backend: our SDK answers
// the probe with relay, reuse and quiet; a strict v1 backend declines it; with no
// verified backend nothing may be handed off.
func TestDispatcherMode(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.V1)
	cases := []struct {
		name string
		be   *handofftest.Backend
		pid  func() int
		want handoff.Mode
	}{
		{"sdk backend", bes[handofftest.Echo], pidOf(bes[handofftest.Echo]), handoff.ModeQuiet},
		{"v1 backend", bes[handofftest.V1], pidOf(bes[handofftest.V1]), handoff.ModePlain},
		{"no verified backend", bes[handofftest.Echo], func() int { return 0 }, handoff.ModeNoBackend},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := handoff.New(handoff.Options{Endpoint: tc.be.Handoff, ExpectPID: tc.pid, Spares: 1, Log: zerolog.Nop()})
			run(t, d)
			if tc.want != handoff.ModeNoBackend {
				waitSpares(t, d, 1)
			}
			if got := d.Mode(); got != tc.want {
				t.Fatalf("Mode() = %v, want %v (%+v)", got, tc.want, d.Stats())
			}
		})
	}
}
