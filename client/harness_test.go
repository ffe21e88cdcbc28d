package client_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/rpbroker/broker/handoff"
	"github.com/rpbroker/broker/handoff/handofftest"
	"github.com/rpbroker/broker/registered"
	"github.com/rpbroker/broker/registry"
	"github.com/rpbroker/broker/serve"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

// TestMain doubles as the backend: handofftest re-executes the test binary.
func TestMain(m *testing.M) {
	handofftest.MaybeChild()
	goleak.VerifyTestMain(m)
}

const (
	service = "echo"
	version = "1.0.0"
)

// defs serves one service definition, as the Loader would.
type defs struct{}

func (defs) Lookup(s string) servicedef.Lookup {
	if s != service {
		return servicedef.Lookup{}
	}
	return servicedef.Lookup{Def: &wirepb.ServiceDefinition{ServiceName: service}, Found: true}
}

// hellos counts answered Hellos.
type hellos struct{ n atomic.Int64 }

func (h *hellos) HelloDone(serve.HelloOutcome) { h.n.Add(1) }

// broker is a real serve loop routing to a registered backend, in this process.
type broker struct {
	path   string
	rb     *registered.Backend
	hellos *hellos
}

type brokerOpts struct {
	handoff bool
	ho      handoff.Options
	limiter *serve.RateLimiter
}

func startBroker(t testing.TB, be *handofftest.Backend, o brokerOpts) *broker {
	t.Helper()
	dir := handofftest.ShortDir(t)
	path := filepath.Join(dir, "ctl.sock")
	ln, err := serve.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ro := registered.Options{
		Service: service, Version: version, Endpoint: be.Endpoint, Instance: "private:" + service,
		Registry: registry.New(), Log: zerolog.Nop(), Handoff: o.ho,
	}
	if o.handoff {
		ro.HandoffEndpoint = be.Handoff
	}
	rb := registered.New(ro)
	h := &hellos{}
	loop := serve.New(serve.Options{
		Listener: ln,
		Settings: serve.Settings{Service: service, HelloTimeout: 5 * time.Second, Router: rb},
		Defs:     defs{}, Shared: serve.NewShared(o.limiter, h), Log: zerolog.Nop(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { rb.Run(ctx) })
	wg.Go(func() { loop.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	b := &broker{path: path, rb: rb, hellos: h}
	waitUntil(t, "backend verified", func() bool { return rb.Current() != nil })
	if d := rb.Dispatcher(); d != nil && o.handoff {
		waitUntil(t, "spares dialled", func() bool { return d.Stats().Spares > 0 })
	}
	return b
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
