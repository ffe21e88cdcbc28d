package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

var zcDef = &wirepb.ServiceDefinition{ServiceName: "zc", BinaryPath: "/bin/zc", MinVersion: "1.0.0"}

func okRouter() Router {
	return routerFunc(func(_ context.Context, r *Request) (Route, error) {
		return Route{Pipe: "/tmp/be-" + r.Hello.ServiceName + ".sock", Version: r.Hello.WantedVersion}, nil
	})
}

func TestDispatchRefusals(t *testing.T) {
	defs := mapDefs{
		"zc":     {Def: zcDef, Found: true},
		"other":  {Def: &wirepb.ServiceDefinition{ServiceName: "other", BinaryPath: "/bin/o"}, Found: true},
		"broken": {Err: errors.New("servicedef /d/broken.servicedef: binary_path is empty"), Found: true},
		"listed": {Def: &wirepb.ServiceDefinition{ServiceName: "listed", BinaryPath: "/b", VersionAllowList: []string{"2.0.0"}}, Found: true},
		"badiso": {Def: &wirepb.ServiceDefinition{ServiceName: "badiso", BinaryPath: "/b", Isolation: wirepb.BrokerIsolation_EXPLICIT_INSTANCE}, Found: true},
	}
	router := routerFunc(func(_ context.Context, r *Request) (Route, error) {
		if r.Hello.WantedVersion == "9.9.9" {
			return Route{}, wire.Refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered, wire.RetryBackend)
		}
		return Route{Pipe: "/tmp/be.sock", Version: r.Hello.WantedVersion}, nil
	})
	h := startLoop(t, Settings{Service: "*", Router: router}, defs, nil)

	hello := func(mut func(*wirepb.Hello)) []byte {
		m := goodHello()
		mut(m)
		return frameBytes(t, helloFrame(t, m))
	}
	frame := func(mut func(*wirepb.Frame)) []byte {
		f := helloFrame(t, goodHello())
		mut(f)
		return frameBytes(t, f)
	}
	header := func(n uint32) []byte { return binary.LittleEndian.AppendUint32([]byte{1}, n) }
	PR, VU := wirepb.ErrorCode_ERROR_PEER_REJECTED, wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED
	SU, VB := wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN, wirepb.ErrorCode_ERROR_VERSION_BLOCKED

	for _, tc := range []struct {
		name   string
		raw    []byte
		code   wirepb.ErrorCode
		reason string
		retry  uint64
		echo   bool // request_id and trace echoed
	}{
		{"bad framing byte", []byte{0x02, 0, 0, 0, 0}, VU, wire.ReasonFramingVersion, 0, false},
		{"frame over 16 MiB", header(wire.MaxFrameBody + 1), PR, wire.ReasonHelloTooLarge, 0, false},
		{"truncated body", append(header(100), 1, 2, 3), PR, wire.ReasonIncompleteHello, 0, false},
		{"garbage body", append(header(4), 0xff, 0xff, 0xff, 0xff), PR, wire.ReasonMalformedFrame, 0, false},
		{"hello body over 64 KiB", frame(func(f *wirepb.Frame) { f.Payload = make([]byte, wire.MaxHelloBody) }), PR, wire.ReasonHelloTooLarge, 0, true},
		{"envelope v2", frame(func(f *wirepb.Frame) { f.EnvelopeVersion = 2 }), VU, wire.ReasonEnvelopeVersion, 0, true},
		{"kind response", frame(func(f *wirepb.Frame) { f.Kind = wirepb.FrameKind_RESPONSE }), PR, wire.ReasonKindNotRequest, 0, true},
		{"identity protocol", frame(func(f *wirepb.Frame) { f.PayloadProtocol = wire.ProtoIdentity }), PR, wire.ReasonNotControlPlane, 0, true},
		{"compressed", frame(func(f *wirepb.Frame) { f.PayloadEncoding = wirepb.PayloadEncoding_ZSTD }), PR, wire.ReasonCompressed, 0, true},
		{"malformed hello", frame(func(f *wirepb.Frame) { f.Payload = []byte{0xff, 0xff} }), PR, wire.ReasonMalformedHello, 0, true},
		{"range above v1", hello(func(h *wirepb.Hello) { h.ClientMinProtocol, h.ClientMaxProtocol = 2, 3 }), VU, wire.ReasonProtocolRange, 0, true},
		{"range below v1", hello(func(h *wirepb.Hello) { h.ClientMinProtocol, h.ClientMaxProtocol = 0, 0 }), VU, wire.ReasonProtocolRange, 0, true},
		{"uppercase service", hello(func(h *wirepb.Hello) { h.ServiceName = "Zc" }), PR, wire.ReasonServiceName, 0, true},
		{"65-char service", hello(func(h *wirepb.Hello) { h.ServiceName = strings.Repeat("a", 65) }), PR, wire.ReasonServiceName, 0, true},
		{"v-prefixed version", hello(func(h *wirepb.Hello) { h.WantedVersion = "v1.2.3" }), PR, wire.ReasonWantedVersion, 0, true},
		{"build metadata", hello(func(h *wirepb.Hello) { h.WantedVersion = "1.2.3+b" }), PR, wire.ReasonWantedVersion, 0, true},
		{"client_version 129", hello(func(h *wirepb.Hello) { h.ClientVersion = strings.Repeat("x", 129) }), PR, wire.ReasonClientVersion, 0, true},
		{"lib name 65", hello(func(h *wirepb.Hello) { h.ClientLibName = strings.Repeat("x", 65) }), PR, wire.ReasonClientLib, 0, true},
		{"lib version 65", hello(func(h *wirepb.Hello) { h.ClientLibVersion = strings.Repeat("x", 65) }), PR, wire.ReasonClientLib, 0, true},
		{"peer pid lies", hello(func(h *wirepb.Hello) { h.PeerPid = 1 }), PR, wire.ReasonPeerPID, 0, true},
		{"unknown service", hello(func(h *wirepb.Hello) { h.ServiceName = "nope" }), SU, wire.ReasonServiceNotFound, 0, true},
		{"invalid servicedef", hello(func(h *wirepb.Hello) { h.ServiceName = "broken" }), SU, wire.ReasonServiceLoad + "servicedef /d/broken.servicedef: binary_path is empty", 0, true},
		{"below min_version", hello(func(h *wirepb.Hello) { h.WantedVersion = "0.9.0" }), VB, wire.ReasonBelowMin, 30000, true},
		{"not in allow list", hello(func(h *wirepb.Hello) { h.ServiceName = "listed" }), VB, wire.ReasonNotAllowed, 30000, true},
		{"isolation unresolvable", hello(func(h *wirepb.Hello) { h.ServiceName = "badiso" }), wirepb.ErrorCode_ERROR_INTERNAL, wire.ReasonIsolation, 0, true},
		{"router refusal", hello(func(h *wirepb.Hello) { h.WantedVersion = "9.9.9" }), wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered, 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := h.roundTrip(tc.raw)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			hr := h.helloReplyOf(f)
			r := hr.GetRefused()
			if r == nil {
				t.Fatalf("want refusal, got %v", hr)
			}
			if r.Code != tc.code || !strings.HasPrefix(r.Reason, tc.reason) || r.RetryAfterMs != tc.retry {
				t.Fatalf("got %s %q retry %d; want %s %q retry %d", r.Code, r.Reason, r.RetryAfterMs, tc.code, tc.reason, tc.retry)
			}
			if r.DaemonMinProtocol != 1 || r.DaemonMaxProtocol != 1 || len(r.Details) != 0 {
				t.Fatalf("protocol range/details: %v", r)
			}
			if tc.echo && (f.RequestId != 77 || f.Traceparent == "" || f.Tracestate != "vendor=1") {
				t.Fatalf("correlation not echoed: %v", f)
			}
			if !tc.echo && f.RequestId != 0 {
				t.Fatalf("request id %d on an undecodable request", f.RequestId)
			}
		})
	}
	if n := h.loop.ConnectionsOpen(); n != 0 {
		testutil.WaitFor(t, "connections to close", func() bool { return h.loop.ConnectionsOpen() == 0 })
	}
}

func (h *harness) helloReplyOf(f *wirepb.Frame) *wirepb.HelloReply {
	h.t.Helper()
	var hr wirepb.HelloReply
	if err := protoUnmarshal(f.Payload, &hr); err != nil {
		h.t.Fatal(err)
	}
	return &hr
}

func TestServiceNotServedOnThisSocket(t *testing.T) {
	defs := mapDefs{"zc": {Def: zcDef, Found: true}, "other": {Def: &wirepb.ServiceDefinition{ServiceName: "other", BinaryPath: "/b"}, Found: true}}
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, defs, nil)
	m := goodHello()
	m.ServiceName = "other"
	r := h.helloReply(frameBytes(t, helloFrame(t, m))).GetRefused()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN || r.Reason != wire.ReasonServiceNotServed {
		t.Fatalf("got %v", r)
	}
}

func TestImplicitDefinitionForRegisteredService(t *testing.T) {
	h := startLoop(t, Settings{Service: "zc", Router: okRouter(), ImplicitDef: true}, mapDefs{}, nil)
	if n := h.helloReply(frameBytes(t, helloFrame(t, goodHello()))).GetNegotiated(); n == nil {
		t.Fatal("a registered service without a servicedef file should negotiate")
	}
	m := goodHello()
	m.ServiceName = "other"
	if r := h.helloReply(frameBytes(t, helloFrame(t, m))).GetRefused(); r == nil || r.Reason != wire.ReasonServiceNotFound {
		t.Fatalf("other services stay unknown: %v", r)
	}
}

func TestNegotiated(t *testing.T) {
	token := bytes.Repeat([]byte{7}, 16)
	router := func(tok []byte) routerFunc {
		return func(_ context.Context, r *Request) (Route, error) {
			return Route{Pipe: "/tmp/be.sock", Version: "1.2.3", Token: tok, Capabilities: wire.CapEarlyData}, nil
		}
	}
	defs := mapDefs{"zc": {Def: zcDef, Found: true}}
	withToken := startLoop(t, Settings{Service: "zc", Router: router(token)}, defs, nil)
	noToken := startLoop(t, Settings{Service: "zc", Router: router(nil)}, defs, nil)
	const both = wire.CapHandlePassing | wire.CapEarlyData
	var last uint64
	for i, tc := range []struct {
		h         *harness
		caps      uint64
		keepalive uint64
		wantKA    uint64
		wantToken bool
		wantCaps  uint64
	}{
		{withToken, 0, 0, 1800, false, 0},
		{withToken, wire.CapHandlePassing, 30, 30, true, wire.CapHandlePassing},
		{withToken, 0x8000000000000000, 0, 1800, false, 0}, // unknown bits ignored
		// Route.Capabilities: only bits the client set, only with a token.
		{withToken, both, 0, 1800, true, both},
		{withToken, wire.CapEarlyData, 0, 1800, false, 0},
		{noToken, both, 0, 1800, false, 0},
	} {
		m := goodHello()
		m.ClientCapabilities, m.ClientKeepaliveSecs = tc.caps, tc.keepalive
		n := tc.h.helloReply(frameBytes(t, helloFrame(t, m))).GetNegotiated()
		if n == nil {
			t.Fatalf("case %d: not negotiated", i)
		}
		if n.NegotiatedProtocol != 1 || n.BackendPipe != "/tmp/be.sock" || n.DaemonVersion != "1.2.3" || n.KeepaliveIntervalSecs != tc.wantKA {
			t.Fatalf("case %d: %v", i, n)
		}
		if got := len(n.HandlePassedToken) == 16; got != tc.wantToken || n.ServerCapabilities != tc.wantCaps {
			t.Fatalf("case %d: token=%x caps=%#x, want caps %#x", i, n.HandlePassedToken, n.ServerCapabilities, tc.wantCaps)
		}
		if tc.h == withToken {
			if n.ConnectionId <= last {
				t.Fatalf("connection ids must increase: %d after %d", n.ConnectionId, last)
			}
			last = n.ConnectionId
		}
	}
}

func TestHelloRateLimitApplies(t *testing.T) {
	shared := NewShared(NewRateLimiter(3, time.Hour, nil), nil)
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, shared)
	raw := frameBytes(t, helloFrame(t, goodHello()))
	for i := range 3 {
		if h.helloReply(raw).GetNegotiated() == nil {
			t.Fatalf("hello %d refused under the limit", i)
		}
	}
	r := h.helloReply(raw).GetRefused()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.Reason != wire.ReasonHelloRateLimit || r.RetryAfterMs < 1 {
		t.Fatalf("4th hello: %v", r)
	}
}

func TestDrainingAndFDPressure(t *testing.T) {
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	raw := frameBytes(t, helloFrame(t, goodHello()))
	h.shared.FD.SetHighUsage(true)
	r := h.helloReply(raw).GetRefused()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_FD_PRESSURE || r.Reason != wire.ReasonFDPressure || r.RetryAfterMs != 1000 {
		t.Fatalf("fd pressure: %v", r)
	}
	h.shared.FD.SetHighUsage(false)
	h.shared.Drain()
	r = h.helloReply(raw).GetRefused()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_SHUTTING_DOWN || r.Reason != wire.ReasonShuttingDown {
		t.Fatalf("draining: %v", r)
	}
}

func TestFDPressureRecoversAfterThreeGoodAccepts(t *testing.T) {
	p := NewFDPressure()
	p.AcceptFailed()
	for i := range 2 {
		p.AcceptOK()
		if !p.Demoted() {
			t.Fatalf("recovered after %d good accepts", i+1)
		}
	}
	p.AcceptOK()
	if p.Demoted() {
		t.Fatal("still demoted after 3 good accepts")
	}
}

func TestSilentPeerCutAtDeadline(t *testing.T) {
	h := startLoop(t, Settings{Service: "zc", Router: okRouter(), HelloTimeout: 100 * time.Millisecond}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	c := h.dial()
	defer c.Close()
	c.Write([]byte{1, 10, 0}) // a trickle, then silence
	f, err := wire.ReadFrame(c, wire.MaxFrameBody)
	if err != nil {
		t.Fatalf("want a best-effort refusal at the deadline, got %v", err)
	}
	if r := h.helloReplyOf(f).GetRefused(); r == nil || r.Reason != wire.ReasonIncompleteHello {
		t.Fatalf("got %v", r)
	}
	// The loop still serves.
	if h.helloReply(frameBytes(t, helloFrame(t, goodHello()))).GetNegotiated() == nil {
		t.Fatal("loop stopped serving after a silent peer")
	}
}

func TestForeignPeerDroppedSilently(t *testing.T) {
	// Our own uid looks foreign to this loop: the real SO_PEERCRED path decides.
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil,
		func(l *Loop) { l.euid++ })
	c := h.dial()
	defer c.Close()
	c.Write(frameBytes(t, helloFrame(t, goodHello())))
	var buf [1]byte
	n, err := c.Read(buf[:])
	if n != 0 || err == nil {
		t.Fatalf("foreign peer got %d bytes (err %v); want EOF without a byte", n, err)
	}
}

func TestConnectionLimit(t *testing.T) {
	gate := make(chan struct{})
	var entered sync.WaitGroup
	entered.Add(2)
	router := routerFunc(func(ctx context.Context, r *Request) (Route, error) {
		if r.Hello.WantedVersion == "2.0.0" {
			entered.Done()
			<-gate
		}
		return Route{Pipe: "/tmp/be.sock", Version: r.Hello.WantedVersion}, nil
	})
	h := startLoop(t, Settings{Service: "zc", Router: router, MaxConns: 2}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	slow := goodHello()
	slow.WantedVersion = "2.0.0"
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		raw := frameBytes(t, helloFrame(t, slow))
		go func() {
			defer wg.Done()
			if _, err := h.roundTrip(raw); err != nil {
				t.Errorf("slow hello: %v", err)
			}
		}()
	}
	entered.Wait() // both slots are held
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	r := h.helloReply(frameBytes(t, helloFrame(t, goodHello()))).GetRefused()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.Reason != wire.ReasonConnLimit || r.RetryAfterMs == 0 {
		t.Fatalf("over the cap: %v", r)
	}
	close(gate)
	wg.Wait()
	testutil.WaitFor(t, "slots to free", func() bool { return h.loop.ConnectionsOpen() == 0 })
	if h.helloReply(frameBytes(t, helloFrame(t, goodHello()))).GetNegotiated() == nil {
		t.Fatal("loop must serve again after the cap")
	}
	// Raising the cap in place admits more at once without a rebind.
	h.loop.ApplySettings(Settings{Service: "zc", Router: router, MaxConns: 10, HelloTimeout: time.Second})
	if h.loop.Settings().MaxConns != 10 {
		t.Fatal("settings not applied")
	}
}

func TestStaleSocketReclaimedLiveRefused(t *testing.T) {
	dir := testutil.ShortDir(t)
	path := dir + "/s.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("live socket: err = %v, want in use", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file behind
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not reclaimed: %v", err)
	}
	ln2.Close()
}

func TestPrepareDirRefusesUnsafeDirectories(t *testing.T) {
	base := testutil.ShortDir(t)
	open := base + "/open"
	mkdir(t, open, 0o755)
	link := base + "/link"
	if err := symlink(base, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{open, "chmod 700"},
		{link, "symlink"},
	} {
		if err := PrepareDir(tc.dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PrepareDir(%s) = %v, want %q", tc.dir, err, tc.want)
		}
	}
	if err := PrepareDir(base + "/new/nested"); err != nil {
		t.Fatalf("missing dir should be created: %v", err)
	}
}

// BeforeReply runs just before the Negotiated that AfterReply follows, with its final
// connection id, and never without a token.
func TestBeforeReply(t *testing.T) {
	token := bytes.Repeat([]byte{7}, 16)
	var mu sync.Mutex
	var seen []string
	note := func(s string, n *wirepb.Negotiated) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, s+":"+strings.Repeat("i", int(n.ConnectionId)))
	}
	router := routerFunc(func(_ context.Context, r *Request) (Route, error) {
		return Route{Pipe: "/tmp/be.sock", Version: "1.2.3", Token: token,
			BeforeReply: func(_ context.Context, n *wirepb.Negotiated) { note("before", n) },
			AfterReply:  func(_ context.Context, _ *net.UnixConn, n *wirepb.Negotiated) { note("after", n) },
		}, nil
	})
	h := startLoop(t, Settings{Service: "zc", Router: router}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	for _, tc := range []struct {
		name string
		caps uint64
		want bool
	}{{"token granted", wire.CapHandlePassing, true}, {"no bit 0: neither hook", 0, false}} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			m := goodHello()
			m.ClientCapabilities = tc.caps
			n := h.helloReply(frameBytes(t, helloFrame(t, m))).GetNegotiated()
			if n == nil {
				t.Fatal("not negotiated")
			}
			id := strings.Repeat("i", int(n.ConnectionId))
			want := []string{"before:" + id, "after:" + id}
			if !tc.want {
				want = nil
			}
			testutil.WaitFor(t, "hooks ran", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) == len(want)
			})
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(seen, ",") != strings.Join(want, ",") {
				t.Fatalf("hooks %q, want %q", seen, want)
			}
		})
	}
}
