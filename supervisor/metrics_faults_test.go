package supervisor

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

type panicRouter struct{}

func (panicRouter) Route(context.Context, *serve.Request) (serve.Route, error) {
	panic("route exploded")
}

type oneDef struct{}

func (oneDef) Lookup(s string) servicedef.Lookup {
	return servicedef.Lookup{Def: &wirepb.ServiceDefinition{ServiceName: s, BinaryPath: "/b"}, Found: true}
}

// TestPanicsAndFramingRefusalsInMetrics: a panic recovered by a serve loop is counted in
// running_process_broker_panics_total{where}, and a frame refused before any Hello field
// was read is counted in hello_total by its refusal code.
func TestPanicsAndFramingRefusalsInMetrics(t *testing.T) {
	s := &Supervisor{log: zerolog.Nop(), registry: registry.New()}
	s.metrics = newMetrics(s)
	s.shared = serve.NewShared(nil, observer{s})
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := serve.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	loop := serve.New(serve.Options{Listener: ln, Settings: serve.Settings{Service: "zc", Router: panicRouter{}, HelloTimeout: 5 * time.Second},
		Defs: oneDef{}, Shared: s.shared, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	defer func() { cancel(); <-done }()

	send := func(raw []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(raw)
		wire.ReadFrame(c, wire.MaxFrameBody)
	}
	hello, _ := wire.Marshal(&wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: "zc", WantedVersion: "1.0.0"})
	f, _ := wire.EncodeFrame(wire.NewFrame(wirepb.FrameKind_REQUEST, wire.ProtoControl, 1, hello))
	send(f)
	send(f)
	send([]byte{1, 2, 0, 0, 0, 0xff, 0xff})
	for _, want := range []string{
		`running_process_broker_panics_total{where="route"} 2`,
		`running_process_broker_v1_hello_total{outcome="peer_rejected",service="",version=""} 1`,
		`running_process_broker_v1_hello_total{outcome="internal",service="zc",version="1.0.0"} 2`,
	} {
		testutil.WaitFor(t, want, func() bool {
			out, err := s.metrics.render()
			return err == nil && strings.Contains(out, want)
		})
	}
}
