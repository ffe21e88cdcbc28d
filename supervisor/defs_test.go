package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

// panicOnceHook panics the first time, once armed, that the logger logs msg: the caller's
// own code (its logger) on the servicedef event path, with no hook in the broker.
type panicOnceHook struct {
	msg   string
	armed atomic.Bool
}

func (h *panicOnceHook) Run(_ *zerolog.Event, _ zerolog.Level, msg string) {
	if msg == h.msg && h.armed.CompareAndSwap(true, false) {
		panic("hook panicked on " + msg)
	}
}

func installDef(t *testing.T, dir string, def *wirepb.ServiceDefinition) {
	t.Helper()
	if _, err := servicedef.Install(dir, def); err != nil {
		t.Fatal(err)
	}
}

func TestServicedefPanicIsCountedAndLoaderGoesOn(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	hook := &panicOnceHook{msg: "service definition loaded"}
	sup, err := New(Options{
		Load: func() (*config.Config, error) { return config.Load(e.cfgPath, config.LoadOptions{Environ: []string{}}) },
		Log:  testLogger(t).Hook(hook),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sup: sup, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- sup.Run(ctx) }()
	t.Cleanup(func() { r.shutdown(t) })
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))

	// Logging the load panics: the definition still applies and the panic is counted.
	hook.armed.Store(true)
	installDef(t, e.defDir, &wirepb.ServiceDefinition{ServiceName: "svc", BinaryPath: "/usr/bin/svc", MinVersion: "2.0.0"})
	testutil.WaitFor(t, "min_version to apply", func() bool {
		_, err := hello(e.sock("svc"), "svc", "1.0.0")
		return refusedCode(err) == wirepb.ErrorCode_ERROR_VERSION_BLOCKED
	})
	const counted = `running_process_broker_panics_total{where="servicedef"} 1`
	testutil.WaitFor(t, counted, func() bool {
		reply, err := client.Admin(context.Background(), e.sock("svc"), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_METRICS})
		return err == nil && strings.Contains(reply.Body, counted)
	})

	// The loader is still watching: the next change applies too.
	if err := os.Remove(filepath.Join(e.defDir, "svc"+servicedef.Ext)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "svc to negotiate once its definition is removed", negotiates(e.sock("svc"), "svc", "1.0.0"))
}
