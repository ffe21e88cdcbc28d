package client_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/supervisor/registered"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

// TestMain doubles as the backend: handofftest re-executes the test binary.
func TestMain(m *testing.M) {
	handofftest.MaybeChild()
	maybeBrokerChild()
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
func (h *hellos) PanicRecovered(string)        {}

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
	dir := testutil.ShortDir(t)
	path := filepath.Join(dir, "ctl.sock")
	hep := ""
	if o.handoff {
		hep = be.Handoff
	}
	rb, loop, h, err := newBroker(path, be.Endpoint, hep, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { rb.Run(ctx) })
	wg.Go(func() { loop.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	b := &broker{path: path, rb: rb, hellos: h}
	testutil.WaitFor(t, "backend verified", func() bool { return rb.Current() != nil })
	if d := rb.Dispatcher(); d != nil && o.handoff {
		testutil.WaitFor(t, "spares dialled", func() bool { return d.Stats().Spares > 0 })
	}
	return b
}

// newBroker builds a serve loop on path routing to the registered backend at endpoint,
// handing off through hep when it is set.
func newBroker(path, endpoint, hep string, o brokerOpts) (*registered.Backend, *serve.Loop, *hellos, error) {
	ln, err := serve.Listen(path)
	if err != nil {
		return nil, nil, nil, err
	}
	rb := registered.New(registered.Options{
		Service: service, Version: version, Endpoint: endpoint, Instance: "private:" + service,
		Registry: registry.New(), Log: zerolog.Nop(), Handoff: o.ho, HandoffEndpoint: hep,
	})
	h := &hellos{}
	loop := serve.New(serve.Options{
		Listener: ln,
		Settings: serve.Settings{Service: service, HelloTimeout: 5 * time.Second, Router: rb},
		Defs:     defs{}, Shared: serve.NewShared(o.limiter, h), Log: zerolog.Nop(),
	})
	return rb, loop, h, nil
}

// envBroker makes the test binary a broker process (for the benchmark): control socket,
// backend endpoint and handoff endpoint, separated by newlines.
const envBroker = "RPB_CLIENT_TEST_BROKER"

// maybeBrokerChild runs the broker and exits when the process was started as one.
func maybeBrokerChild() {
	spec := os.Getenv(envBroker)
	if spec == "" {
		return
	}
	f := strings.Split(spec, "\n")
	if len(f) != 3 {
		fmt.Fprintf(os.Stderr, "broker child: bad %s\n", envBroker)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	rb, loop, _, err := newBroker(f[0], f[1], f[2], brokerOpts{handoff: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "broker child: %v\n", err)
		os.Exit(1)
	}
	var wg sync.WaitGroup
	wg.Go(func() { rb.Run(ctx) })
	wg.Go(func() { loop.Run(ctx) })
	wg.Wait()
	os.Exit(0)
}

// startBrokerProcess runs the broker as a child process, as in production, and waits
// until a handoff through it succeeds.
func startBrokerProcess(t testing.TB, be *handofftest.Backend) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envBroker+"="+path+"\n"+be.Endpoint+"\n"+be.Handoff, "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	testutil.WaitFor(t, "broker process hands off", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, _, err := client.Connect(ctx, path, service, version, client.WithHandoff())
		if err != nil {
			return false
		}
		defer c.Close()
		return connectedTo(c) == path
	})
	return path
}
