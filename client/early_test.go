package client_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
)

// Early data reaches the backend exactly once on every path: written with the Hello and
// found by the adopting backend, or (no EVENT) sent through backend_pipe, or (no grant)
// on backend_pipe. Bit 1 is granted only with a token, to clients that set bits 0 and 1,
// once the backend has proven it relays the EVENT; a bit-1 client that is not granted it
// gets no token at all (its data sits unread behind the Hello).
func TestConnectEarlyData(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.Alternate, handofftest.NoAck, handofftest.V1)
	early := []byte("early \x00\x01 request")
	withEarly := []client.Option{client.WithHandoff(), client.WithEarlyData(early)}
	cases := []struct {
		name    string
		mode    string
		noHO    bool // the broker has handoff off
		ho      handoff.Options
		prime   bool // one plain handoff first: the backend proves it relays
		opts    []client.Option
		granted bool // Negotiated carries bit 1
		adopted bool
	}{
		{"granted and adopted", handofftest.Echo, false, handoff.Options{}, true, withEarly, true, true},
		{"granted, backend declines: via backend_pipe", handofftest.Alternate, false, handoff.Options{}, true, withEarly, true, false},
		{"proven by the probe: granted on the first connection", handofftest.Echo, false, handoff.Options{}, false, withEarly, true, true},
		{"v1 backend declines the probe: no token, via backend_pipe", handofftest.V1, false, handoff.Options{}, true, withEarly, false, false},
		{"backend never acks: no token", handofftest.NoAck, false, handoff.Options{AckTimeout: 100 * time.Millisecond}, true, withEarly, false, false},
		{"v1 backend, first connection: no token, via backend_pipe", handofftest.V1, false, handoff.Options{}, false, withEarly, false, false},
		{"broker without handoff: via backend_pipe", handofftest.Echo, true, handoff.Options{}, false, withEarly, false, false},
		{"bit 1 without bit 0: no grant", handofftest.Echo, false, handoff.Options{}, true,
			[]client.Option{client.WithCapabilities(wire.CapEarlyData), client.WithEarlyData(early)}, false, false},
		{"early data without handoff", handofftest.Echo, false, handoff.Options{}, true,
			[]client.Option{client.WithEarlyData(early)}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := bes[tc.mode]
			b := startBroker(t, be, brokerOpts{handoff: !tc.noHO, ho: tc.ho})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d := b.rb.Dispatcher()
			if tc.granted {
				// Run probes its spares in the background.
				testutil.WaitFor(t, "a proven spare", d.EarlyData)
			}
			if tc.prime {
				c, _, err := client.Connect(ctx, b.path, service, version, client.WithHandoff())
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, c, "prime")
				c.Close()
				testutil.WaitFor(t, "priming handoff done", func() bool { st := d.Stats(); return st.Handoffs+st.Failures == 1 })
			}
			var st0 handoff.Stats // what priming counted (it may have been granted write-ahead)
			if d != nil {
				st0 = d.Stats()
			}
			c, n, err := client.Connect(ctx, b.path, service, version, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := n.ServerCapabilities&wire.CapEarlyData != 0; got != tc.granted {
				t.Fatalf("server capabilities %#x: early data granted %v, want %v", n.ServerCapabilities, got, tc.granted)
			}
			if got := len(n.HandlePassedToken) > 0; got != tc.granted {
				t.Fatalf("token issued %v, want %v (only with the grant)", got, tc.granted)
			}
			// The echo returns the early data once, then what follows, then EOF.
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("|next")); err != nil {
				t.Fatal(err)
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != string(early)+"|next" {
				t.Fatalf("backend echoed %q, %v; want the early data exactly once", got, err)
			}
			// Checked after the first I/O: with early data granted, that settles the
			// handoff (and may move to backend_pipe).
			want := be.Endpoint
			if tc.adopted {
				want = b.path
			}
			if got := connectedTo(c); got != want {
				t.Fatalf("connected to %s, want %s", got, want)
			}
			if d == nil {
				return
			}
			if tc.granted && !tc.adopted {
				// The decline may be read lazily, on Run's next pass.
				testutil.WaitFor(t, "decline counted", func() bool { return d.Stats().Failures == st0.Failures+1 })
			}
			if st := d.Stats(); tc.granted != (st.Early == st0.Early+1) || (tc.granted && !tc.adopted && st.Failures != st0.Failures+1) {
				t.Fatalf("stats %+v after priming %+v", st, st0)
			}
		})
	}
}

// A refused Hello returns the refusal; the early data behind it was never read, so
// nothing reached the backend and the next connection sees only its own bytes.
func TestConnectEarlyDataRefused(t *testing.T) {
	be := handofftest.Start(t, handofftest.Echo, testutil.ShortDir(t), -1)
	b := startBroker(t, be, brokerOpts{handoff: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := client.Connect(ctx, b.path, service, "9.9.9", client.WithHandoff(), client.WithEarlyData([]byte("lost")))
	var re *client.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("connect to a wrong version: %v, want a refusal", err)
	}
	c, _, err := client.Connect(ctx, b.path, service, version, client.WithHandoff(), client.WithEarlyData([]byte("only")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "only" {
		t.Fatalf("backend echoed %q, %v; want %q", got, err, "only")
	}
}

// Write-ahead (bit 2, ours): a WithHandoff client whose broker can hand it to a backend
// proven to relay gets Connect back at Negotiated and writes at once; what it wrote
// reaches the backend exactly once, on the adopted connection or, declined, through
// backend_pipe. Without a proven backend the same client gets a plain token and waits
// for the EVENT, as v1 does.
func TestConnectWriteAhead(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.Alternate, handofftest.V1)
	cases := []struct {
		name    string
		mode    string
		ho      handoff.Options
		prime   bool // one handoff first (Alternate then declines the next)
		granted bool
		adopted bool
	}{
		{"granted and adopted", handofftest.Echo, handoff.Options{}, false, true, true},
		{"granted, backend declines: via backend_pipe", handofftest.Alternate, handoff.Options{}, true, true, false},
		{"v1 backend: plain token, adopted after the EVENT", handofftest.V1, handoff.Options{}, false, false, true},
		{"v1 backend after a handoff: plain token, adopted after the EVENT", handofftest.V1, handoff.Options{}, true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := bes[tc.mode]
			b := startBroker(t, be, brokerOpts{handoff: true, ho: tc.ho})
			d := b.rb.Dispatcher()
			if tc.granted {
				testutil.WaitFor(t, "a proven spare", d.EarlyData)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.prime {
				c, _, err := client.Connect(ctx, b.path, service, version, client.WithHandoff())
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, c, "prime")
				c.Close()
			}
			c, n, err := client.Connect(ctx, b.path, service, version, client.WithHandoff())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := n.ServerCapabilities&wire.CapWriteAhead != 0; got != tc.granted || len(n.HandlePassedToken) != 16 {
				t.Fatalf("capabilities %#x, token %x: want a token, write-ahead granted %v", n.ServerCapabilities, n.HandlePassedToken, tc.granted)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for _, w := range []string{"one|", "two"} {
				if _, err := c.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "one|two" {
				t.Fatalf("backend echoed %q, %v; want what was written, once", got, err)
			}
			want := be.Endpoint
			if tc.adopted {
				want = b.path
			}
			if got := connectedTo(c); got != want {
				t.Fatalf("connected to %s, want %s", got, want)
			}
		})
	}
}
