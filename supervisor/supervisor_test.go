package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire/wirepb"
)

type env struct {
	t       testing.TB
	dir     string // short: sockets live here
	cfgPath string
	defDir  string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := testutil.ShortDir(t)
	e := &env{t: t, dir: dir, cfgPath: filepath.Join(dir, "broker.toml"), defDir: filepath.Join(dir, "defs")}
	if err := os.Mkdir(e.defDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) sock(name string) string { return filepath.Join(e.dir, name+".sock") }

// writeConfig writes broker.toml with a [broker] header and the given services.
func (e *env) writeConfig(services string) {
	e.t.Helper()
	e.writeConfigWith("", services)
}

// writeConfigWith writes broker.toml with extra [broker] keys (one per line) and services.
func (e *env) writeConfigWith(brokerKeys, services string) {
	e.t.Helper()
	body := fmt.Sprintf(`[broker]
servicedef_dir = %q
runtime_dir = %q
hello_rate_limit = 0
shutdown_grace = "5s"
log_level = "debug"
%s
%s`, e.defDir, e.dir, brokerKeys, services)
	tmp := e.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfgPath); err != nil {
		e.t.Fatal(err)
	}
}

func registeredService(name, version, endpoint, socket string) string {
	return fmt.Sprintf(`
[[service]]
name = %q
mode = "registered"
version = %q
backend_endpoint = %q
socket = %q
`, name, version, endpoint, socket)
}

// testLogger logs into the test output; a benchmark measures the broker, not its debug
// lines, so it logs from info up only.
func testLogger(t testing.TB) zerolog.Logger {
	l := zerolog.New(zerolog.NewTestWriter(t))
	if _, bench := t.(*testing.B); bench {
		l = l.Level(zerolog.InfoLevel)
	}
	return l
}

type running struct {
	sup  *Supervisor
	stop context.CancelFunc
	done chan error
}

func (e *env) start() *running {
	e.t.Helper()
	sup, err := New(Options{
		Load: func() (*config.Config, error) { return config.Load(e.cfgPath, config.LoadOptions{Environ: []string{}}) },
		Log:  testLogger(e.t),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sup: sup, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- sup.Run(ctx) }()
	e.t.Cleanup(func() { r.shutdown(e.t) })
	return r
}

func (r *running) shutdown(t testing.TB) {
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		t.Error("supervisor did not stop")
	}
}

// startBackend runs the test binary as a separate echo backend process with its socket
// in dir (the same path every time for the same dir) and returns that endpoint.
func startBackend(t testing.TB, dir string) (string, *exec.Cmd) {
	t.Helper()
	b := handofftest.Start(t, handofftest.Echo, dir, -1)
	return b.Endpoint, b.Cmd
}

func hello(socket, service, version string) (*wirepb.Negotiated, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return client.Hello(ctx, socket, &wirepb.Hello{
		ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: service, WantedVersion: version,
	})
}

func refusedCode(err error) wirepb.ErrorCode {
	var r *client.RefusedError
	if errors.As(err, &r) {
		return r.Code
	}
	return -1
}

func negotiates(socket, service, version string) func() bool {
	return func() bool { _, err := hello(socket, service, version); return err == nil }
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestReloadAppliesOnlyWhatChanged(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("keep", "1.0.0", be, e.sock("keep")) +
		registeredService("gone", "1.0.0", be, e.sock("gone")) +
		registeredService("edit", "1.0.0", be, e.sock("edit")))
	r := e.start()
	for _, s := range []string{"keep", "gone", "edit"} {
		testutil.WaitFor(t, s+" to negotiate", negotiates(e.sock(s), s, "1.0.0"))
	}
	keepIno := inode(t, e.sock("keep"))

	// Hammer the unchanged service through the whole reload.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := hello(e.sock("keep"), "keep", "1.0.0"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	testutil.WaitFor(t, "hammer to start", func() bool { return ok.Load() > 20 })

	e.writeConfig(registeredService("keep", "1.0.0", be, e.sock("keep")) +
		registeredService("edit", "2.0.0", be, e.sock("edit")) +
		registeredService("added", "1.0.0", be, e.sock("added")))
	res := r.sup.Reload(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	plan := strings.Join(res.Lines, "\n")
	for _, want := range []string{"keep", "edit", "added", "gone"} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan does not mention %s:\n%s", want, plan)
		}
	}
	testutil.WaitFor(t, "added to negotiate", negotiates(e.sock("added"), "added", "1.0.0"))
	testutil.WaitFor(t, "edit to serve its new version", negotiates(e.sock("edit"), "edit", "2.0.0"))
	if _, err := hello(e.sock("edit"), "edit", "1.0.0"); refusedCode(err) != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
		t.Errorf("old version after edit: %v", err)
	}
	testutil.WaitFor(t, "gone's socket to disappear", func() bool {
		_, err := os.Stat(e.sock("gone"))
		return errors.Is(err, os.ErrNotExist)
	})
	before := ok.Load()
	testutil.WaitFor(t, "hammer to continue after reload", func() bool { return ok.Load() > before+20 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d Hellos on the unchanged service failed during reload (first: %v); %d succeeded", n, firstErr.Load(), ok.Load())
	}
	if inode(t, e.sock("keep")) != keepIno {
		t.Fatal("unchanged service was rebound")
	}
	t.Logf("unchanged service answered %d Hellos across the reload, 0 failed", ok.Load())
}

func TestInvalidReloadKeepsRunningConfig(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	r := e.start()
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))

	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")) + "\n[[service]]\nname = \"x\"\nmode = \"lanch\"\n")
	res := r.sup.Reload(context.Background())
	if res.Err == nil || !strings.Contains(res.Err.Error(), "lanch") || !strings.Contains(res.Err.Error(), "broker.toml") {
		t.Fatalf("reload error should name the file and the bad value: %v", res.Err)
	}
	if _, err := hello(e.sock("svc"), "svc", "1.0.0"); err != nil {
		t.Fatalf("old service must keep answering: %v", err)
	}
	body, err := r.sup.metrics.render()
	if err != nil || !strings.Contains(body, "running_process_broker_config_last_reload_successful 0") {
		t.Fatalf("metrics should record the failed reload: %v\n%s", err, body)
	}
}

func TestBackendDeathAndReturn(t *testing.T) {
	e := newEnv(t)
	be, cmd := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	e.start()
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))

	cmd.Process.Kill()
	cmd.Wait()
	_, err := hello(e.sock("svc"), "svc", "1.0.0")
	var ref *client.RefusedError
	if !errors.As(err, &ref) || ref.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED ||
		ref.Reason != "backend is not registered" || ref.RetryAfter != time.Second {
		t.Fatalf("dead backend: %v", err)
	}
	os.Remove(be)
	startBackend(t, e.dir)
	testutil.WaitFor(t, "svc to negotiate with the new backend", negotiates(e.sock("svc"), "svc", "1.0.0"))
}

func TestServicedefDroppedInIsSeenByNextHello(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	e.start()
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))

	def := &wirepb.ServiceDefinition{ServiceName: "svc", BinaryPath: "/usr/bin/svc", MinVersion: "2.0.0"}
	b, err := servicedef.Encode(def)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(e.defDir, ".svc.tmp")
	os.WriteFile(tmp, b, 0o600)
	os.Rename(tmp, filepath.Join(e.defDir, "svc.servicedef"))
	testutil.WaitFor(t, "min_version to apply", func() bool {
		_, err := hello(e.sock("svc"), "svc", "1.0.0")
		return refusedCode(err) == wirepb.ErrorCode_ERROR_VERSION_BLOCKED
	})

	// Both the load and the refusal are lifecycle events, on disk and in DUMP. Neither is
	// ordered before the reply the client saw: the refusal is recorded after it is written,
	// and the load comes through the loader's change feed, which the lookup does not wait
	// for. So wait for them.
	var kinds map[wirepb.EventKind]bool
	testutil.WaitForErr(t, 5*time.Second, func() error {
		evs, err := events.ReadFile(filepath.Join(e.dir, "broker-events.log"))
		if err != nil {
			return err
		}
		kinds = map[wirepb.EventKind]bool{}
		for _, ev := range evs {
			kinds[ev.Kind] = true
		}
		if !kinds[wirepb.EventKind_SERVICE_DEF_LOADED] || !kinds[wirepb.EventKind_HELLO_REFUSED] {
			return fmt.Errorf("event log kinds %v; want SERVICE_DEF_LOADED and HELLO_REFUSED", kinds)
		}
		return nil
	})
	dump, err := client.Admin(context.Background(), e.sock("svc"), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_DUMP})
	if err != nil || !strings.Contains(dump.Body, `"kind": "SERVICE_DEF_LOADED"`) || !strings.Contains(dump.Body, `"kind": "HELLO_REFUSED"`) {
		t.Fatalf("DUMP lacks the recent events: %v\n%s", err, dump.GetBody())
	}
}

func TestShutdownRemovesSocketsAndRefusesDuringDrain(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	r := e.start()
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))
	reply, err := client.Admin(context.Background(), e.sock("svc"), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_SHUTDOWN})
	if err != nil || reply.Body != "broker shutting down\n" || reply.ExitCode != 0 {
		t.Fatalf("shutdown reply %v, %v", reply, err)
	}
	select {
	case err := <-r.done:
		close(r.done)
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("admin SHUTDOWN did not stop the broker")
	}
	if _, err := os.Stat(e.sock("svc")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// A backend that does not speak the identity probe can be verified by connect: the
// endpoint accepts and its listener runs as our uid.
func TestVerifyConnect(t *testing.T) {
	e := newEnv(t)
	be := filepath.Join(e.dir, "nonprobe-be.sock")
	ln, err := net.Listen("unix", be)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e.writeConfig(registeredService("plain", "1.0.0", be, e.sock("plain")) + "verify = \"connect\"\n" +
		registeredService("probed", "1.0.0", be, e.sock("probed")))
	e.start()
	testutil.WaitFor(t, "connect-verified service to negotiate", negotiates(e.sock("plain"), "plain", "1.0.0"))
	// The same endpoint fails the identity probe: it never answers a probe frame. Wait
	// for the socket to be bound (any answer), then the answer must be a refusal.
	testutil.WaitFor(t, "probed to answer", func() bool {
		_, err = hello(e.sock("probed"), "probed", "1.0.0")
		var r *client.RefusedError
		return errors.As(err, &r)
	})
	if refusedCode(err) != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
		t.Fatalf("probe-verified service against a non-probe backend: %v", err)
	}
}
