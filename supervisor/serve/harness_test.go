package serve

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// mapDefs is a fixed servicedef view for loop tests; the Loader has its own tests.
type mapDefs map[string]servicedef.Lookup

func (m mapDefs) Lookup(s string) servicedef.Lookup { return m[s] }

// routerFunc adapts a function to Router.
type routerFunc func(ctx context.Context, r *Request) (Route, error)

func (f routerFunc) Route(ctx context.Context, r *Request) (Route, error) { return f(ctx, r) }

type harness struct {
	t      testing.TB
	loop   *Loop
	shared *Shared
	path   string
	cancel context.CancelFunc
	done   chan error
}

// startLoop binds a real socket and runs a loop on it until the test ends.
func startLoop(t testing.TB, set Settings, defs Defs, shared *Shared, tweak ...func(*Loop)) *harness {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if shared == nil {
		shared = NewShared(NewRateLimiter(0, time.Second, nil), nil)
	}
	if set.HelloTimeout == 0 {
		set.HelloTimeout = 5 * time.Second
	}
	h := &harness{t: t, shared: shared, path: path, done: make(chan error, 1)}
	h.loop = New(Options{Listener: ln, Settings: set, Defs: defs, Shared: shared, Log: zerolog.Nop()})
	for _, f := range tweak {
		f(h.loop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.loop.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Error("loop did not stop")
	}
}

func (h *harness) dial() *net.UnixConn {
	h.t.Helper()
	c, err := net.Dial("unix", h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UnixConn)
}

// roundTrip writes raw bytes and reads one reply frame (nil if the broker closed).
func (h *harness) roundTrip(raw []byte) (*wirepb.Frame, error) {
	h.t.Helper()
	c := h.dial()
	defer c.Close()
	if len(raw) > 0 {
		if _, err := c.Write(raw); err != nil {
			return nil, err
		}
	}
	c.CloseWrite() // a peer that sent all it will send (a truncated frame ends here)
	return wire.ReadFrame(c, wire.MaxFrameBody)
}

func (h *harness) helloReply(raw []byte) *wirepb.HelloReply {
	h.t.Helper()
	f, err := h.roundTrip(raw)
	if err != nil {
		h.t.Fatalf("no reply: %v", err)
	}
	if f.Kind != wirepb.FrameKind_RESPONSE || f.PayloadProtocol != wire.ProtoControl || f.EnvelopeVersion != 1 {
		h.t.Fatalf("reply frame %v", f)
	}
	var hr wirepb.HelloReply
	if err := proto.Unmarshal(f.Payload, &hr); err != nil {
		h.t.Fatal(err)
	}
	return &hr
}

func frameBytes(t testing.TB, f *wirepb.Frame) []byte {
	t.Helper()
	b, err := wire.EncodeFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func helloFrame(t testing.TB, h *wirepb.Hello) *wirepb.Frame {
	t.Helper()
	f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoControl, 77, h)
	if err != nil {
		t.Fatal(err)
	}
	f.Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	f.Tracestate = "vendor=1"
	return f
}

func goodHello() *wirepb.Hello {
	return &wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: "zc", WantedVersion: "1.2.3"}
}
