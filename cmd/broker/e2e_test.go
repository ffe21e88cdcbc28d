package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

type e2e struct {
	t   *testing.T
	dir string
	cfg string
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	dir := testutil.ShortDir(t)
	e := &e2e{t: t, dir: dir, cfg: filepath.Join(dir, "broker.toml")}
	os.Mkdir(filepath.Join(dir, "defs"), 0o700)
	return e
}

func (e *e2e) sock(name string) string { return filepath.Join(e.dir, name+".sock") }

func (e *e2e) writeConfig(extra string, services ...string) {
	e.t.Helper()
	body := fmt.Sprintf("[broker]\nservicedef_dir = %q\nruntime_dir = %q\nhello_rate_limit = 0\nshutdown_grace = \"5s\"\n%s\n",
		filepath.Join(e.dir, "defs"), e.dir, extra)
	for _, s := range services {
		body += fmt.Sprintf("\n[[service]]\nname = %q\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n",
			s, e.backend(), e.sock(s))
	}
	tmp := e.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfg); err != nil {
		e.t.Fatal(err)
	}
}

// startProcess runs the test binary in one of its roles.
func startProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	out := &testutil.SyncBuffer{}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, out
}

// startBackend runs the test binary as a separate echo backend listening at e.backend().
func (e *e2e) startBackend() {
	e.t.Helper()
	if ep := handofftest.Start(e.t, handofftest.Echo, e.dir, -1).Endpoint; ep != e.backend() {
		e.t.Fatalf("backend listens on %s, config names %s", ep, e.backend())
	}
}

// backend is where the echo backend listens (handofftest names it after its mode).
func (e *e2e) backend() string { return filepath.Join(e.dir, handofftest.Echo+"-be.sock") }

func (e *e2e) startBroker() (*exec.Cmd, *testutil.SyncBuffer) {
	e.t.Helper()
	return startProcess(e.t, []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=json"}, "-c", e.cfg)
}

func dialable(path string) bool {
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func hello(socket, service string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Hello(ctx, socket, &wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: service, WantedVersion: "1.0.0"})
	return err
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), time.Since(start)
		}
		return 0, time.Since(start)
	case <-time.After(within):
		t.Fatalf("process did not exit within %s", within)
	}
	return -1, 0
}

func TestBrokerSIGHUPAndSIGTERM(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha", "beta")
	cmd, out := e.startBroker()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })

	// A valid change while a client hammers alpha: beta goes, gamma comes, alpha is
	// untouched and answers every Hello.
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	hammered := make(chan struct{})
	go func() {
		defer close(hammered)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := hello(e.sock("alpha"), "alpha"); err != nil {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
		}
	}()
	testutil.WaitFor(t, "the hammer to start", func() bool { return ok.Load() > 10 })
	e.writeConfig("", "alpha", "gamma")
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, "gamma after SIGHUP", func() bool { return hello(e.sock("gamma"), "gamma") == nil })
	testutil.WaitFor(t, "beta's socket to go", func() bool { _, err := os.Stat(e.sock("beta")); return err != nil })
	before := ok.Load()
	testutil.WaitFor(t, "alpha to keep answering", func() bool { return ok.Load() > before+10 })
	close(stop)
	<-hammered
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d Hellos on the unchanged service failed across SIGHUP", n, n+ok.Load())
	}

	// An invalid file: logged precisely, the running services keep answering.
	e.writeConfig("bogus_key = 1", "alpha")
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, "the rejected reload to be logged", func() bool { return strings.Contains(out.String(), "config_reload_failed") })
	if !strings.Contains(out.String(), "bogus_key") {
		t.Fatalf("the log should name the bad key:\n%s", out.String())
	}
	for _, s := range []string{"alpha", "gamma"} {
		if err := hello(e.sock(s), s); err != nil {
			t.Fatalf("%s after an invalid reload: %v", s, err)
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	code, took := waitExit(t, cmd, 10*time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, out.String())
	}
	for _, s := range []string{"alpha", "gamma"} {
		if _, err := os.Stat(e.sock(s)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after shutdown", s)
		}
	}
	t.Logf("SIGTERM to exit: %s", took)
}

func TestBrokerBadConfigAtStartExits1(t *testing.T) {
	e := newE2E(t)
	os.WriteFile(e.cfg, []byte("[[service]]\nname = \"x\"\nmode = \"lanch\"\n"), 0o600)
	cmd, out := e.startBroker()
	code, _ := waitExit(t, cmd, 10*time.Second)
	if code != 1 || !strings.Contains(out.String(), "lanch") || !strings.Contains(out.String(), e.cfg) {
		t.Fatalf("exit %d, output:\n%s", code, out.String())
	}
}

func TestAdminCommandExitCodes(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	e.startBroker()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"healthz", "--socket", e.sock("alpha")}, 0, "ok\n"},
		{[]string{"readyz", "--socket", e.sock("alpha")}, 0, "ready\n"},
		{[]string{"status", "--socket", e.sock("alpha")}, 0, "broker_instance: private:alpha\naccepting_hello: true\n"},
		{[]string{"status", "--json", "-c", e.cfg, "--service", "alpha"}, 0, `"backend_pipe": "` + e.backend() + `"`},
		{[]string{"metrics", "--socket", e.sock("alpha")}, 0, "# EOF\n"},
		{[]string{"nope", "--socket", e.sock("alpha")}, 2, ""},
		{[]string{"status"}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := runAdmin(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("admin %v: exit %d stdout %q stderr %q; want exit %d containing %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.want)
		}
	}
	// Real values: this very request is open while the broker answers it (earlier ones may
	// not be counted closed yet), and the verified backend has a pid.
	var stdout, stderr bytes.Buffer
	runAdmin(context.Background(), []string{"status", "--json", "--socket", e.sock("alpha")}, &stdout, &stderr)
	var st struct {
		Open     int `json:"connections_open"`
		Backends []struct {
			PID int `json:"pid"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil || st.Open < 1 || len(st.Backends) != 1 || st.Backends[0].PID == 0 {
		t.Errorf("status json: %v %+v", err, st)
	}
	stdout.Reset()
	if code := runHello(context.Background(), []string{"--socket", e.sock("alpha"), "alpha", "1.0.0"}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), "negotiated: backend_pipe="+e.backend()) {
		t.Errorf("hello: exit %d %q %q", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := runHello(context.Background(), []string{"--socket", e.sock("alpha"), "alpha", "2.0.0"}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stdout.String(), "refused: ERROR_BACKEND_SPAWN_FAILED: backend is not registered") {
		t.Errorf("hello refused: exit %d %q", code, stdout.String())
	}
	stdout.Reset()
	if code := runHello(context.Background(), []string{"--socket", e.sock("alpha"), "--send", "ping", "alpha", "1.0.0"}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), `backend replied: "ping"`) {
		t.Errorf("hello --send: exit %d %q %q", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := runReload(context.Background(), []string{"-c", e.cfg}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "unchanged alpha") {
		t.Errorf("reload: exit %d %q %q", code, stdout.String(), stderr.String())
	}
}

// TestForeignUserDroppedWithoutAByte runs the broker as nobody and connects as root: root
// can reach the socket, but its euid differs, so the broker must drop it silently.
func TestForeignUserDroppedWithoutAByte(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the broker as another user; serve.TestForeignPeerDroppedSilently covers the rule unprivileged")
	}
	const nobody = 65534
	e := newE2E(t)
	bin := filepath.Join(e.dir, "bin")
	os.Mkdir(bin, 0o755)
	exe := filepath.Join(bin, "broker.test")
	testutil.CopyFile(t, os.Args[0], exe, 0o755)
	run := filepath.Join(e.dir, "run")
	os.Mkdir(run, 0o700)
	os.Chown(run, nobody, nobody)
	os.Chmod(e.dir, 0o711)
	defs := filepath.Join(run, "defs")
	cfg := filepath.Join(run, "broker.toml")
	sock := filepath.Join(run, "s.sock")
	body := fmt.Sprintf("[broker]\nservicedef_dir = %q\nruntime_dir = %q\n\n[[service]]\nname = \"svc\"\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n",
		defs, run, filepath.Join(run, "be.sock"), sock)
	os.WriteFile(cfg, []byte(body), 0o600)
	os.Chown(cfg, nobody, nobody)

	out := &testutil.SyncBuffer{}
	cmd := exec.Command(exe, "-c", cfg)
	cmd.Env = []string{envRunBroker + "=1", "HOME=" + run, "RP_BROKER_LOG_FORMAT=json"}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, "the broker to bind as nobody", func() bool { return dialable(sock) })

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	f, _ := client.NewHelloFrame(&wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: "svc", WantedVersion: "1.0.0"})
	raw, _ := wire.EncodeFrame(f)
	c.Write(raw)
	var buf [1]byte
	if n, err := c.Read(buf[:]); n != 0 || err == nil {
		t.Fatalf("foreign peer read %d bytes (%v); want EOF without a byte", n, err)
	}
	testutil.WaitFor(t, "the drop to be logged", func() bool { return strings.Contains(out.String(), "peer_rejected") })
}

// broker hello --handoff against a real broker process and a backend with a handoff
// endpoint: the reply comes on the socket that carried the Hello; without --handoff it
// comes through backend_pipe. The output says which.
func TestHelloHandoff(t *testing.T) {
	e := newE2E(t)
	be := handofftest.Start(t, handofftest.Echo, e.dir, -1)
	e.writeConfig("", "alpha")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, fmt.Sprintf("handoff_endpoint = %q\n", be.Handoff)...)
	if err := os.WriteFile(e.cfg, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	e.startBroker()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	for _, tc := range []struct {
		args []string
		via  string
	}{
		{[]string{"--handoff"}, "(via handoff, on the socket that carried the Hello)"},
		{nil, "(via backend_pipe)"},
	} {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"--socket", e.sock("alpha"), "--send", "ping"}, tc.args...), "alpha", "1.0.0")
		if code := runHello(context.Background(), args, &stdout, &stderr); code != 0 ||
			!strings.Contains(stdout.String(), `backend replied: "ping" `+tc.via) {
			t.Errorf("hello %v: exit %d %q %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}
