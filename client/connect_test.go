package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

// connectedTo is where c leads: the broker socket (adopted) or the backend pipe.
func connectedTo(c net.Conn) string { return c.RemoteAddr().String() }

func TestConnect(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.Reject)
	echo, reject := bes[handofftest.Echo], bes[handofftest.Reject]
	on := startBroker(t, echo, brokerOpts{handoff: true})
	off := startBroker(t, echo, brokerOpts{})
	rejecting := startBroker(t, reject, brokerOpts{handoff: true})

	cases := []struct {
		name    string
		b       *broker
		opts    []client.Option
		adopted bool // data flows on the socket that carried the Hello
		token   bool // Negotiated carried a token
	}{
		{"handoff adopted", on, []client.Option{client.WithHandoff()}, true, true},
		{"no bit 0: no token, backend_pipe", on, nil, false, false},
		{"bit 0 without opting in: backend_pipe", on, []client.Option{client.WithCapabilities(1)}, false, true},
		{"backend declines: silently on backend_pipe", rejecting, []client.Option{client.WithHandoff()}, false, true},
		{"handoff off in the broker: no token", off, []client.Option{client.WithHandoff()}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			c, n, err := client.Connect(ctx, tc.b.path, service, version, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The first I/O settles a handoff that let the client write ahead.
			roundTrip(t, c, "ping \x01\x02 over the data connection")
			if el := time.Since(start); el > client.DefaultHandoffWait/2 {
				t.Fatalf("connect and a round trip took %v: a fallback must not wait for the handoff deadline", el)
			}
			want := echo.Endpoint
			if tc.b == rejecting {
				want = reject.Endpoint
			}
			if tc.adopted {
				want = tc.b.path
			}
			if got := connectedTo(c); got != want {
				t.Fatalf("connected to %s, want %s", got, want)
			}
			if got := len(n.HandlePassedToken) == 16; got != tc.token {
				t.Fatalf("token %x, want one: %v", n.HandlePassedToken, tc.token)
			}
			if n.BackendPipe == "" || n.ConnectionId == 0 {
				t.Fatalf("negotiated %v", n)
			}
			roundTrip(t, c, "and again")
		})
	}
	// The broker hands off the client that set bit 0 without opting in too; whether the
	// backend's EVENT write beats that client's close decides if it counts as a failure.
	// A handoff sent without waiting for its ack (lazy) moves to Failures once the broker
	// reads the decline.
	testutil.WaitFor(t, "the opted-in handoff counted", func() bool {
		st := on.rb.Dispatcher().Stats()
		return st.Handoffs >= 1 && st.Handoffs+st.Failures == 2
	})
}

// A backend that never acks: the client falls back after the broker's ack deadline, and
// the broker keeps serving other clients in the meantime.
func TestConnectNoAck(t *testing.T) {
	be := handofftest.Start(t, handofftest.NoAck, testutil.ShortDir(t), -1)
	b := startBroker(t, be, brokerOpts{handoff: true, ho: handoff.Options{AckTimeout: 500 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	type result struct {
		c   net.Conn
		err error
		at  time.Duration
	}
	start := time.Now()
	slow := make(chan result, 1)
	go func() {
		c, _, err := client.Connect(ctx, b.path, service, version, client.WithHandoff())
		slow <- result{c, err, time.Since(start)}
	}()
	testutil.WaitFor(t, "handoff in flight", func() bool { return b.hellos.n.Load() == 1 })
	for range 5 {
		c, _, err := client.Connect(ctx, b.path, service, version)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "meanwhile")
		c.Close()
	}
	others := time.Since(start)
	r := <-slow
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	if connectedTo(r.c) != be.Endpoint {
		t.Fatalf("fell back to %s", connectedTo(r.c))
	}
	roundTrip(t, r.c, "after the fallback")
	if others >= r.at || r.at < 400*time.Millisecond || r.at > 1500*time.Millisecond {
		t.Fatalf("others done after %v, fallback after %v: want others first and a fallback near the 500ms ack deadline", others, r.at)
	}
	// The broker closes the client's socket before it counts the failure.
	testutil.WaitFor(t, "failure counted", func() bool { return b.rb.Dispatcher().Stats().Failures == 1 })
	if st := b.rb.Dispatcher().Stats(); st.Failures != 1 || st.Handoffs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConnectCache(t *testing.T) {
	be := handofftest.Start(t, handofftest.Echo, testutil.ShortDir(t), -1)
	b := startBroker(t, be, brokerOpts{})
	var cache client.Cache
	ctx := context.Background()
	for i := range 3 {
		c, n, err := client.Connect(ctx, b.path, service, version, client.WithCache(&cache))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "cached")
		c.Close()
		if n.BackendPipe != be.Endpoint || len(n.HandlePassedToken) != 0 {
			t.Fatalf("negotiated %v", n)
		}
		if got := b.hellos.n.Load(); got != 1 {
			t.Fatalf("connect %d: %d Hellos, want 1 (the rest skip it)", i, got)
		}
	}
	// The backend goes away: the direct dial fails, Connect asks the broker again.
	be.Cmd.Process.Kill()
	be.Cmd.Process.Wait()
	testutil.WaitFor(t, "backend seen dead", func() bool { return b.rb.Current() == nil })
	_, _, err := client.Connect(ctx, b.path, service, version, client.WithCache(&cache))
	var re *client.RefusedError
	if !errors.As(err, &re) || re.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
		t.Fatalf("error %v, want the broker's refusal", err)
	}
	// The broker counts a Hello once its reply is written: the client may be first.
	testutil.WaitFor(t, "second Hello counted", func() bool { return b.hellos.n.Load() >= 2 })
	if b.hellos.n.Load() != 2 || cache.Len() != 0 {
		t.Fatalf("%d Hellos, cache %d entries", b.hellos.n.Load(), cache.Len())
	}
}

func TestConnectRetry(t *testing.T) {
	be := handofftest.Start(t, handofftest.Echo, testutil.ShortDir(t), -1)
	// One Hello per 300 ms per pid: the second Connect is RATE_LIMITED with retry_after.
	b := startBroker(t, be, brokerOpts{limiter: serve.NewRateLimiter(1, 300*time.Millisecond, nil)})
	ctx := context.Background()
	connect := func(ctx context.Context, opts ...client.Option) error {
		c, _, err := client.Connect(ctx, b.path, service, version, opts...)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := connect(ctx); err != nil {
		t.Fatal(err)
	}
	var re *client.RefusedError
	if err := connect(ctx); !errors.As(err, &re) || re.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || re.RetryAfter <= 0 {
		t.Fatalf("without retry: %v, want RATE_LIMITED with retry_after", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := connect(short, client.WithRetry(5)); !errors.As(err, &re) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("retry past the deadline: %v after %v, want the refusal at once", err, time.Since(start))
	}
	if err := connect(ctx, client.WithRetry(5)); err != nil {
		t.Fatalf("with retry: %v", err)
	}
}
