package handoff_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// run starts d.Run for the rest of the test.
func run(t *testing.T, d *handoff.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// pairs makes connected (broker side, client side) Unix connections on a real socket.
type pairs struct {
	t  testing.TB
	ln *net.UnixListener
}

func newPairs(t testing.TB, dir string) *pairs {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "ctl.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &pairs{t: t, ln: ln}
}

func (p *pairs) pair() (broker, client *net.UnixConn) {
	c, err := net.DialUnix("unix", nil, p.ln.Addr().(*net.UnixAddr))
	if err != nil {
		p.t.Fatal(err)
	}
	b, err := p.ln.AcceptUnix()
	if err != nil {
		p.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return b, c
}

func pidOf(b *handofftest.Backend) func() int { return func() int { return b.PID() } }

// req is the handoff of the Negotiated that carried tok and connection id id.
func req(tok []byte, id uint64, early bool) handoff.Request {
	return handoff.Request{Token: tok, ConnectionID: id, Service: "svc", Early: early}
}

// waitSpares waits until the pool is full, so that no dial sits on the measured path and
// fd counts are comparable.
// running returns a dispatcher for be's handoff endpoint with spares spares, run for
// the test, once its pool is full.
func running(t *testing.T, be *handofftest.Backend, spares int) *handoff.Dispatcher {
	t.Helper()
	d := handoff.New(handoff.Options{Endpoint: be.Handoff, ExpectPID: pidOf(be), Spares: spares, Log: zerolog.Nop()})
	run(t, d)
	waitSpares(t, d, spares)
	return d
}

func waitSpares(t testing.TB, d *handoff.Dispatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats().Spares < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool never filled: %+v", d.Stats())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// readRelay reads the handoff-ready EVENT a client gets after an accepted handoff.
func readRelay(t testing.TB, c *net.UnixConn, tok []byte, connID uint64) {
	t.Helper()
	f, err := wire.ReadFrame(c, 1024)
	if err != nil {
		t.Fatalf("no relay: %v", err)
	}
	var ack wirepb.HandoffAck
	if err := proto.Unmarshal(f.Payload, &ack); err != nil {
		t.Fatal(err)
	}
	if f.Kind != wirepb.FrameKind_EVENT || f.PayloadProtocol != wire.ProtoHandoff || f.RequestId != connID ||
		!bytes.Equal(ack.Token, tok) || !ack.Accepted || ack.CorrelationId != connID {
		t.Fatalf("relay %v / %v", f, &ack)
	}
}

func echoRoundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

// Both the plain v1 exchange (a strict v1 backend, which declines the probe) and our
// extensions (the backend relays the EVENT and keeps the connection) end with the client
// served on the socket it already had.
func TestHandoffAdopted(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := handofftest.StartAll(t, dir, handofftest.Echo, handofftest.V1)
	p := newPairs(t, dir)
	for _, v1 := range []bool{true, false} {
		t.Run(map[bool]string{true: "v1", false: "extensions"}[v1], func(t *testing.T) {
			be := bes[map[bool]string{true: handofftest.V1, false: handofftest.Echo}[v1]]
			d := handoff.New(handoff.Options{Endpoint: be.Handoff, ExpectPID: pidOf(be), Spares: 2, Log: zerolog.Nop()})
			run(t, d)
			waitSpares(t, d, 2)
			for i := range 5 {
				bc, cc := p.pair()
				tok := d.Issue()
				id := uint64(100 + i)
				if err := d.Handoff(context.Background(), bc, req(tok, id, false)); err != nil {
					t.Fatal(err)
				}
				readRelay(t, cc, tok, id)
				echoRoundTrip(t, cc, "hello through the handed-off socket")
				cc.Close()
				if !v1 && d.Stats().Spares != 2 {
					t.Fatalf("reused connection not back in the pool: %+v", d.Stats())
				}
			}
			if st := d.Stats(); st.Handoffs != 5 || st.Failures != 0 || st.Tokens != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// Every failure is silent for the client: no relay, its connection simply ends (EOF)
// once the broker's copy is closed; and nothing ever reaches an unverified peer.
func TestHandoffFailures(t *testing.T) {
	dir := testutil.ShortDir(t)
	echo := handofftest.Spawn(t, handofftest.Echo, dir, -1)
	reject := handofftest.Spawn(t, handofftest.Reject, dir, -1)
	noack := handofftest.Spawn(t, handofftest.NoAck, dir, -1)
	peek := handofftest.Spawn(t, handofftest.Peek, dir, -1)
	var foreign *handofftest.Backend
	if os.Geteuid() == 0 {
		foreign = handofftest.Spawn(t, handofftest.Peek, testutil.ShortDir(t), 65534)
	}
	for _, b := range []*handofftest.Backend{echo, reject, noack, peek} {
		b.Ready(t)
	}
	type tc struct {
		name     string
		endpoint string
		expect   func() int
		token    func(d *handoff.Dispatcher) []byte
		want     error
		silent   *handofftest.Backend // must never receive anything
		// late: the spare was proven to relay and reuse, so Handoff returns at the
		// sendmsg and the decline is counted later (lazy.go).
		late bool
	}
	issue := func(d *handoff.Dispatcher) []byte { return d.Issue() }
	cases := []tc{
		{"backend declines", reject.Handoff, pidOf(reject), issue, nil, nil, true},
		{"backend never acks", noack.Handoff, pidOf(noack), issue, os.ErrDeadlineExceeded, nil, false},
		{"token never issued", echo.Handoff, pidOf(echo), func(*handoff.Dispatcher) []byte { return make([]byte, 16) }, handoff.ErrToken, nil, false},
		{"short token", echo.Handoff, pidOf(echo), func(*handoff.Dispatcher) []byte { return []byte{1} }, handoff.ErrToken, nil, false},
		{"token replayed", echo.Handoff, pidOf(echo), func(d *handoff.Dispatcher) []byte {
			tok := d.Issue()
			p := newPairs(t, testutil.ShortDir(t))
			bc, cc := p.pair()
			defer cc.Close()
			if err := d.Handoff(context.Background(), bc, req(tok, 1, false)); err != nil {
				t.Fatal(err)
			}
			return tok
		}, handoff.ErrToken, nil, false},
		{"no verified backend", echo.Handoff, func() int { return 0 }, issue, handoff.ErrNoBackend, nil, false},
		{"listener is not the verified backend", peek.Handoff, pidOf(echo), issue, handoff.ErrPeerUnverified, peek, false},
		{"endpoint missing", filepath.Join(dir, "none.sock"), pidOf(echo), issue, os.ErrNotExist, nil, false},
	}
	if foreign != nil {
		foreign.Ready(t)
		cases = append(cases, tc{"listener owned by another uid", foreign.Handoff, nil, issue, handoff.ErrPeerUnverified, foreign, false})
	}
	p := newPairs(t, dir)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := handoff.Options{Endpoint: c.endpoint, ExpectPID: c.expect, Spares: 1, AckTimeout: 100 * time.Millisecond, Log: zerolog.Nop()}
			if c.late {
				o.AckTimeout = 0 // the default: a slow probe answer must not make the backend v1
			}
			d := handoff.New(o)
			run(t, d)
			if c.late {
				waitSpares(t, d, 1)
				if !d.EarlyData() {
					t.Fatalf("spare not proven by the probe: %+v", d.Stats())
				}
			}
			tok := c.token(d)
			bc, cc := p.pair()
			defer cc.Close()
			start := time.Now()
			err := d.Handoff(context.Background(), bc, req(tok, 7, false))
			if !errors.Is(err, c.want) { // nil: no error
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if c.late {
				testutil.WaitFor(t, "the late decline counted", func() bool {
					st := d.Stats()
					return st.LateFailures == 1 && st.Failures == 1 && st.Handoffs == 0
				})
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("failure took %v", el)
			}
			if b, err := io.ReadAll(cc); err != nil || len(b) != 0 {
				t.Fatalf("client got %q, %v; want a silent EOF", b, err)
			}
			if c.silent != nil {
				if out := c.silent.Stderr(); strings.Contains(out, "fd") || strings.Contains(out, "data") {
					t.Fatalf("unverified peer received %q", out)
				}
			}
		})
	}
}

func TestOfferBytes(t *testing.T) {
	tok := bytes.Repeat([]byte{0xAB}, 16)
	b, err := wire.HandoffOfferFrame(tok, "zc", 9)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.ReadFrame(bytes.NewReader(b), 1024)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x08, 0x00, 0x12, 0x10}, tok...)
	want = append(want, 0x1A, 0x02, 'z', 'c', 0x20, 0x09)
	if !bytes.Equal(f.Payload, want) || f.RequestId != 9 || f.Kind != wirepb.FrameKind_REQUEST || f.PayloadProtocol != 0xD0FF {
		t.Fatalf("offer frame %v\npayload % X\nwant    % X", f, f.Payload, want)
	}
	o, err := wire.ParseHandoffOffer(b[wire.HeaderLen:])
	if err != nil || !bytes.Equal(o.Token, tok) || o.Service != "zc" || o.CorrelationID != 9 || o.HandleValue != 0 ||
		o.RequestID != 9 || o.Ext != (wire.HandoffExt{}) {
		t.Fatalf("decoded %+v, %v", o, err)
	}
}
