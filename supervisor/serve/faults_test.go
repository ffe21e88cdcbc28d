package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// recorder is an Observer that keeps every outcome and counts panics by where.
type recorder struct {
	mu       sync.Mutex
	outcomes []HelloOutcome
	panics   map[string]int
}

func (r *recorder) HelloDone(o HelloOutcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes = append(r.outcomes, o)
}

func (r *recorder) PanicRecovered(where string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.panics == nil {
		r.panics = map[string]int{}
	}
	r.panics[where]++
}

func (r *recorder) panicsAt(where string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.panics[where]
}

// refusals counts the refusals recorded with this code and reason.
func (r *recorder) refusals(code wirepb.ErrorCode, reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.outcomes {
		if o.Code == code && o.Reason == reason {
			n++
		}
	}
	return n
}

// panicDefs panics on a lookup of "boom": a fault inside the connection's own code.
type panicDefs struct{ mapDefs }

func (d panicDefs) Lookup(s string) servicedef.Lookup {
	if s == "boom" {
		panic("lookup exploded")
	}
	return d.mapDefs.Lookup(s)
}

type panicAdmin struct{}

func (panicAdmin) Serve(_ context.Context, r *wirepb.AdminRequest) *wirepb.AdminReply {
	if r.Verb == wirepb.AdminVerb_DUMP {
		panic("admin exploded")
	}
	return &wirepb.AdminReply{Body: "ok\n"}
}

// TestPanicsContained: a panic in one connection's Hello path, route hooks or admin verb
// is recovered there, counted by where, and the loop goes on serving other connections.
func TestPanicsContained(t *testing.T) {
	token := make([]byte, 16)
	router := routerFunc(func(_ context.Context, r *Request) (Route, error) {
		rt := Route{Pipe: "/tmp/be.sock", Version: r.Hello.WantedVersion, Token: token,
			BeforeReply: func(context.Context, *wirepb.Negotiated) {},
			AfterReply:  func(context.Context, *net.UnixConn, *wirepb.Negotiated) {},
		}
		switch r.Hello.WantedVersion {
		case "6.6.6":
			panic("route exploded")
		case "6.6.7":
			rt.BeforeReply = func(context.Context, *wirepb.Negotiated) { panic("before reply exploded") }
		case "6.6.8":
			rt.AfterReply = func(context.Context, *net.UnixConn, *wirepb.Negotiated) { panic(errors.New("after reply exploded")) }
		}
		return rt, nil
	})
	rec := &recorder{}
	logs := &testutil.SyncBuffer{}
	defs := panicDefs{mapDefs{"zc": {Def: zcDef, Found: true}, "boom": {Def: zcDef, Found: true}}}
	h := startLoop(t, Settings{Service: "*", Router: router}, defs, NewShared(nil, rec), func(l *Loop) {
		l.admin = panicAdmin{}
		l.log = zerolog.New(logs)
	})
	hello := func(service, version string) []byte {
		m := goodHello()
		m.ServiceName, m.WantedVersion, m.ClientCapabilities = service, version, wire.CapHandlePassing
		return frameBytes(t, helloFrame(t, m))
	}
	admin := func(v wirepb.AdminVerb) []byte {
		f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, 5, &wirepb.AdminRequest{Verb: v})
		if err != nil {
			t.Fatal(err)
		}
		return frameBytes(t, f)
	}
	for _, tc := range []struct {
		name, where string
		raw         []byte
		want        string // "internal": INTERNAL refusal; "negotiated"; "eof": closed without reply
	}{
		{"defs lookup", "connection", hello("boom", "1.2.3"), "eof"},
		{"Router.Route", "route", hello("zc", "6.6.6"), "internal"},
		{"BeforeReply", "route", hello("zc", "6.6.7"), "internal"},
		{"AfterReply", "route", hello("zc", "6.6.8"), "negotiated"},
		{"admin verb", "admin", admin(wirepb.AdminVerb_DUMP), "eof"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.panicsAt(tc.where)
			f, err := h.roundTrip(tc.raw)
			switch tc.want {
			case "eof":
				if !errors.Is(err, io.EOF) {
					t.Fatalf("want the connection closed without reply, got %v %v", f, err)
				}
			case "internal":
				if err != nil {
					t.Fatal(err)
				}
				if r := h.helloReplyOf(f).GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_INTERNAL || r.Reason != reasonPanic {
					t.Fatalf("got %v", r)
				}
			case "negotiated":
				if err != nil || h.helloReplyOf(f).GetNegotiated() == nil {
					t.Fatalf("got %v %v", f, err)
				}
			}
			testutil.WaitFor(t, "the panic counted at "+tc.where, func() bool { return rec.panicsAt(tc.where) == before+1 })
			// Every other connection is still served, Hello and admin alike.
			if h.helloReply(hello("zc", "1.2.3")).GetNegotiated() == nil {
				t.Fatal("loop stopped serving after a panic")
			}
			if f, err := h.roundTrip(admin(wirepb.AdminVerb_HEALTHZ)); err != nil || f.RequestId != 5 {
				t.Fatalf("admin after a panic: %v %v", f, err)
			}
		})
	}
	testutil.WaitFor(t, "connections to close", func() bool { return h.loop.ConnectionsOpen() == 0 })
	out := logs.String()
	for _, want := range []string{`"level":"error"`, `"where":"route"`, "before reply exploded", `"stack":"goroutine `, "faults_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("panic log lacks %q:\n%s", want, out)
		}
	}
}

// TestSilentClientsOverCapGetRefusal: clients over the connection cap that write nothing
// still read the RATE_LIMITED refusal, after the read deadline has passed, also past the
// refusers that wait for a request.
func TestSilentClientsOverCapGetRefusal(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	router := routerFunc(func(ctx context.Context, r *Request) (Route, error) {
		entered <- struct{}{}
		<-gate
		return Route{Pipe: "/tmp/be.sock", Version: r.Hello.WantedVersion}, nil
	})
	rec := &recorder{}
	h := startLoop(t, Settings{Service: "zc", Router: router, MaxConns: 1}, mapDefs{"zc": {Def: zcDef, Found: true}}, NewShared(nil, rec))
	holder := h.dial()
	defer holder.Close()
	if _, err := holder.Write(frameBytes(t, helloFrame(t, goodHello()))); err != nil {
		t.Fatal(err)
	}
	<-entered // the only slot is held
	defer close(gate)

	const silent = maxRefusers + 36
	var wg sync.WaitGroup
	errs := make(chan error, silent)
	for range silent {
		c := h.dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			f, err := wire.ReadFrame(c, wire.MaxFrameBody) // never writes a byte
			if err != nil {
				errs <- err
				return
			}
			var hr wirepb.HelloReply
			if err := protoUnmarshal(f.Payload, &hr); err != nil {
				errs <- err
				return
			}
			if r := hr.GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED || r.Reason != wire.ReasonConnLimit {
				errs <- errors.New("got " + hr.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		t.Log(err)
	}
	if failed > 0 {
		t.Fatalf("%d of %d silent clients over the cap got no refusal frame", failed, silent)
	}
	testutil.WaitFor(t, "every connection-limit refusal counted", func() bool {
		return rec.refusals(wirepb.ErrorCode_ERROR_RATE_LIMITED, wire.ReasonConnLimit) == silent
	})
}

// TestRefusalsCountedAndLogRateLimited: framing failures, malformed frames and foreign
// peers reach the Observer with their refusal code, and a flood of one kind is logged at
// most once per second with a count.
func TestRefusalsCountedAndLogRateLimited(t *testing.T) {
	rec := &recorder{}
	logs := &testutil.SyncBuffer{}
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, NewShared(nil, rec),
		func(l *Loop) { l.log = zerolog.New(logs).Level(zerolog.DebugLevel) })
	header := func(n uint32) []byte { return binary.LittleEndian.AppendUint32([]byte{1}, n) }
	PR, VU := wirepb.ErrorCode_ERROR_PEER_REJECTED, wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED
	const flood = 30
	start := time.Now()
	for _, tc := range []struct {
		raw    []byte
		code   wirepb.ErrorCode
		reason string
	}{
		{[]byte{0x02, 0, 0, 0, 0}, VU, wire.ReasonFramingVersion},
		{append(header(4), 0xff, 0xff, 0xff, 0xff), PR, wire.ReasonMalformedFrame},
		{append(header(wire.MaxHelloBody+10), 0xff), PR, wire.ReasonIncompleteHello},
		{header(wire.MaxFrameBody + 1), PR, wire.ReasonHelloTooLarge},
	} {
		for range flood {
			if _, err := h.roundTrip(tc.raw); err != nil {
				t.Fatalf("%s: %v", tc.reason, err)
			}
		}
		testutil.WaitFor(t, "refusals counted: "+tc.reason, func() bool { return rec.refusals(tc.code, tc.reason) == flood })
	}
	elapsed := time.Since(start)
	lines := strings.Count(logs.String(), `"event":"hello_refused"`)
	// One line per reason per started second, at most.
	if max := 4 * (int(elapsed/time.Second) + 1); lines < 4 || lines > max {
		t.Fatalf("%d refusal log lines for %d refusals in %v, want 4..%d:\n%s", lines, 4*flood, elapsed, max, logs.String())
	}
	// A foreign peer (our uid looks foreign to this loop) is dropped without a reply, and counted.
	foreign := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{}, NewShared(nil, rec), func(l *Loop) { l.euid++ })
	for range 3 {
		if f, err := foreign.roundTrip(nil); err == nil {
			t.Fatalf("foreign peer got a reply: %v", f)
		}
	}
	testutil.WaitFor(t, "foreign peers counted", func() bool { return rec.refusals(PR, reasonForeignPeer) == 3 })
}

// errDefs reports an unreadable servicedef directory for every service, as the snapshot
// does under fd exhaustion, except for a service whose own file is broken.
type errDefs struct{}

func (errDefs) Lookup(s string) servicedef.Lookup {
	if s == "broken" {
		return servicedef.Lookup{Err: errors.New("servicedef broken.servicedef: binary_path is empty"), Found: true}
	}
	return servicedef.Lookup{Err: errors.New("servicedef dir /d: open /d: too many open files")}
}

// TestRegisteredServiceSurvivesUnreadableDir: a registered service keeps negotiating
// with its implicit definition while the servicedef directory cannot be read; other
// services, and its own broken file, still refuse.
func TestRegisteredServiceSurvivesUnreadableDir(t *testing.T) {
	for _, tc := range []struct {
		socket, service string
		implicit        bool
		want            string // "" negotiated, else a refusal reason prefix
	}{
		{"zc", "zc", true, ""},
		{"zc", "other", true, wire.ReasonServiceLoad},
		{"zc", "zc", false, wire.ReasonServiceLoad}, // a launch service needs its definition
		{"broken", "broken", true, wire.ReasonServiceLoad + "servicedef broken.servicedef"},
	} {
		h := startLoop(t, Settings{Service: tc.socket, Router: okRouter(), ImplicitDef: tc.implicit}, errDefs{}, nil)
		m := goodHello()
		m.ServiceName = tc.service
		hr := h.helloReply(frameBytes(t, helloFrame(t, m)))
		if r := hr.GetRefused(); (tc.want == "") != (r == nil) || (r != nil && !strings.HasPrefix(r.Reason, tc.want)) {
			t.Errorf("%s on %s (implicit %v): got %v, want %q", tc.service, tc.socket, tc.implicit, hr, tc.want)
		}
	}
}
