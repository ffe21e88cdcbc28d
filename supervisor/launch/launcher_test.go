package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestColdHelloSpawnsWarmHelloReuses(t *testing.T) {
	h := newHarness(t)
	h.service("echo", Settings{}, nil)

	n := h.negotiate("echo", "1.2.3")
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(h.runDir) + `/rpb-v1-` + testSID + `-be-[0-9a-f]{32}\.sock$`).MatchString(n.BackendPipe) {
		t.Fatalf("backend pipe %q does not follow the v1 name", n.BackendPipe)
	}
	if n.DaemonVersion != "1.2.3" {
		t.Errorf("daemon_version = %q, want the wanted version", n.DaemonVersion)
	}
	if fi, err := os.Stat(n.BackendPipe); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backend socket: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	echoThrough(t, n.BackendPipe)
	if again := h.negotiate("echo", "1.2.3"); again.BackendPipe != n.BackendPipe {
		t.Fatalf("warm Hello went to %s, want %s", again.BackendPipe, n.BackendPipe)
	}

	recs := h.waitRecords(1)
	if len(recs) != 1 {
		t.Fatalf("%d backends started, want 1", len(recs))
	}
	r := recs[0]
	pid := h.pidOf(n.BackendPipe)
	if r.PID != pid {
		t.Errorf("registry pid %d, backend says %d", pid, r.PID)
	}
	wantEnv := map[string]string{
		wire.EnvServiceName:    "echo",
		wire.EnvServiceVersion: "1.2.3",
		wire.EnvBackendPipe:    n.BackendPipe,
		wire.EnvNamespace:      "private:echo",
		wire.EnvInstance:       "private:echo",
		wire.EnvTraceparent:    testTraceparent,
		wire.EnvListenerFD:     "3",
		wire.EnvIsDaemon:       "1",
	}
	for k, v := range wantEnv {
		if r.Env[k] != v {
			t.Errorf("child env %s = %q, want %q", k, r.Env[k], v)
		}
	}
	if _, ok := r.Env[wire.EnvTracestate]; ok {
		t.Errorf("empty tracestate must not be set")
	}
	if len(r.Args) != 1 || r.Stdin != "/dev/null" {
		t.Errorf("child args %q stdin %q; want no arguments and /dev/null", r.Args, r.Stdin)
	}

	for _, kind := range []wirepb.EventKind{wirepb.EventKind_SPAWN_ATTEMPT, wirepb.EventKind_SPAWN} {
		if ev := h.waitEvent(kind, pid); ev.Service != "echo" || ev.Version != "1.2.3" || ev.Instance != "private:echo" {
			t.Errorf("%s event %+v", kind, ev)
		}
	}
	be := h.reg.List()
	if len(be) != 1 || be[0].Mode != "launch" || be[0].LastHello().IsZero() {
		t.Fatalf("registry %+v", be)
	}
	if infos := h.m.Backends(); len(infos) != 1 || infos[0].State != "running" || infos[0].PID != pid {
		t.Errorf("Backends() = %+v", infos)
	}
	// The child's stderr reaches the broker log with its service and stream.
	testutil.WaitForErr(t, 5*time.Second, func() error {
		for _, line := range strings.Split(h.log.String(), "\n") {
			if strings.Contains(line, "test backend: serving") && strings.Contains(line, `"service":"echo"`) &&
				strings.Contains(line, `"stream":"stderr"`) && strings.Contains(line, fmt.Sprintf(`"pid":%d`, pid)) {
				return nil
			}
		}
		return fmt.Errorf("child stderr not in the log:\n%s", h.log.String())
	})

	h.stop()
	waitGone(t, pid, time.Second)
	if ev := h.waitEvent(wirepb.EventKind_DIED_SHUTDOWN, pid); ev.Status != "exit status 0" {
		t.Errorf("shutdown status %q, want exit status 0 (the backend handles SIGTERM)", ev.Status)
	}
	if _, err := os.Stat(n.BackendPipe); !os.IsNotExist(err) {
		t.Errorf("backend socket left behind: %v", err)
	}
	if len(h.reg.List()) != 0 {
		t.Errorf("registry not empty after shutdown")
	}
}

func TestConcurrentColdHellosShareOneSpawn(t *testing.T) {
	h := newHarness(t)
	h.service("echo", Settings{}, nil)
	const clients = 100
	pipes := make([]string, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			hr, err := hello(h.sock, "echo", "2.0.0")
			switch {
			case err != nil:
				errs[i] = err
			case hr.GetNegotiated() == nil:
				errs[i] = fmt.Errorf("not negotiated: %v", hr)
			default:
				pipes[i] = hr.GetNegotiated().BackendPipe
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if pipes[i] != pipes[0] {
			t.Fatalf("client %d routed to %s, client 0 to %s", i, pipes[i], pipes[0])
		}
	}
	if recs := h.waitRecords(1); len(recs) != 1 {
		t.Fatalf("backends started (by their own record): %d, want 1", len(recs))
	}
	if n := h.ev.count(wirepb.EventKind_SPAWN_ATTEMPT); n != 1 {
		t.Fatalf("%d spawn attempts, want 1", n)
	}
}

func TestSpawnFailuresArePrecise(t *testing.T) {
	h := newHarness(t)
	outside := filepath.Join(h.dir, "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.CopyFile(t, filepath.Join(testBinDir, "backend"), filepath.Join(outside, "backend"), 0o755)
	binDir := filepath.Join(h.dir, "bin")
	if err := os.Mkdir(binDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "backend"), filepath.Join(binDir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binDir, "noexec"), []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The hung backend ignores SIGTERM from its first millisecond (a Go test binary takes
	// longer than the 300 ms start timeout to get there under -race): the SIGKILL path.
	if err := os.WriteFile(filepath.Join(binDir, "hang"), []byte("#!/bin/sh\ntrap '' TERM\nexec sleep 3600\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(binDir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(testBinDir, "backend")
	cases := []struct {
		svc      string
		def      *wirepb.ServiceDefinition
		behavior string
		want     string // the reason after "backend spawn failed: "
	}{
		{"nobinary", &wirepb.ServiceDefinition{PerVersionBinaryDir: binDir}, "", "binary_path is not set"},
		{"nodir", &wirepb.ServiceDefinition{BinaryPath: real}, "", "per_version_binary_dir is not set"},
		{"missingdir", &wirepb.ServiceDefinition{BinaryPath: real, PerVersionBinaryDir: binDir + "/none"}, "",
			"per_version_binary_dir " + binDir + "/none: does not exist"},
		{"missing", &wirepb.ServiceDefinition{BinaryPath: binDir + "/gone", PerVersionBinaryDir: binDir}, "",
			"binary_path " + binDir + "/gone: does not exist"},
		{"outside", &wirepb.ServiceDefinition{BinaryPath: filepath.Join(outside, "backend"), PerVersionBinaryDir: binDir}, "",
			"binary_path " + outside + "/backend resolves to " + outside + "/backend, outside per_version_binary_dir " + binDir},
		{"escape", &wirepb.ServiceDefinition{BinaryPath: binDir + "/escape", PerVersionBinaryDir: binDir}, "",
			"binary_path " + binDir + "/escape resolves to " + outside + "/backend, outside per_version_binary_dir " + binDir},
		{"noexec", &wirepb.ServiceDefinition{BinaryPath: binDir + "/noexec", PerVersionBinaryDir: binDir}, "",
			"binary_path " + binDir + "/noexec is not executable"},
		{"adir", &wirepb.ServiceDefinition{BinaryPath: binDir + "/adir", PerVersionBinaryDir: binDir}, "",
			"binary_path " + binDir + "/adir is not a regular file"},
		{"exits", nil, "exit3", "backend exited before ready: exit status 3"},
		{"hangs", &wirepb.ServiceDefinition{BinaryPath: binDir + "/hang", PerVersionBinaryDir: binDir}, "hang",
			"backend did not answer the identity probe within 300ms"},
	}
	for _, tc := range cases {
		s := Settings{StartTimeout: 10 * time.Second}
		if tc.behavior == "hang" {
			s.StartTimeout = 300 * time.Millisecond
		}
		h.service(tc.svc, s, tc.def)
		if tc.behavior != "" {
			h.behave(tc.svc, tc.behavior)
		}
	}
	for _, tc := range cases {
		t.Run(tc.svc, func(t *testing.T) {
			r := h.refused(tc.svc, "1.0.0")
			if r.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED || r.RetryAfterMs != wire.RetryBackend {
				t.Errorf("code %s retry %d, want BACKEND_SPAWN_FAILED retry %d", r.Code, r.RetryAfterMs, wire.RetryBackend)
			}
			if want := wire.ReasonSpawnFailed + tc.want; r.Reason != want {
				t.Errorf("reason\n got %q\nwant %q", r.Reason, want)
			}
		})
	}
	// Both started children are reaped: the one that exited and the one killed after the
	// start timeout (it ignores SIGTERM, so this is the SIGKILL path).
	for _, svc := range []string{"exits", "hangs"} {
		pid := h.firstAttempt(svc)
		died := h.waitEvent(wirepb.EventKind_DIED_CRASH, pid)
		waitGone(t, pid, 5*time.Second)
		if svc == "hangs" && (died.Status != "signal: killed" || !strings.Contains(died.Reason, "did not answer")) {
			t.Errorf("hung child died with %q (%s), want SIGKILL after the grace", died.Status, died.Reason)
		}
	}
	if n := len(h.m.Backends()); n != 0 {
		t.Errorf("%d children left", n)
	}
}

func TestIdleBackendStops(t *testing.T) {
	h := newHarness(t)
	h.service("idle", Settings{IdleTimeout: 300 * time.Millisecond}, nil)
	start := time.Now()
	n := h.negotiate("idle", "1.0.0")
	pid := h.pidOf(n.BackendPipe)
	ev := h.waitEvent(wirepb.EventKind_DIED_IDLE, pid)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("stopped after %v, before the idle timeout", took)
	}
	if ev.Status != "exit status 0" {
		t.Errorf("idle stop status %q", ev.Status)
	}
	waitGone(t, pid, time.Second)
	if len(h.reg.List()) != 0 {
		t.Error("idle backend still registered")
	}
	if again := h.negotiate("idle", "1.0.0"); again.BackendPipe == n.BackendPipe {
		t.Error("Hello after the idle stop reused the dead backend")
	}
}

func TestCrashedBackendIsReapedAndRespawned(t *testing.T) {
	h := newHarness(t)
	h.service("echo", Settings{}, nil)
	n := h.negotiate("echo", "1.0.0")
	pid := h.pidOf(n.BackendPipe)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := h.waitEvent(wirepb.EventKind_DIED_CRASH, pid)
	if ev.Status != "signal: killed" || ev.Reason != "backend exited unexpectedly" {
		t.Errorf("crash event %+v", ev)
	}
	waitGone(t, pid, time.Second)
	if len(h.reg.List()) != 0 {
		t.Error("crashed backend still registered")
	}
	again := h.negotiate("echo", "1.0.0")
	if again.BackendPipe == n.BackendPipe {
		t.Fatal("routed to the crashed backend")
	}
	echoThrough(t, again.BackendPipe)
}

func TestReplacedBinaryGetsFreshBackend(t *testing.T) {
	h := newHarness(t)
	binDir := filepath.Join(h.dir, "bin")
	if err := os.Mkdir(binDir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "backend")
	testutil.CopyFile(t, filepath.Join(testBinDir, "backend"), bin, 0o755)
	h.service("echo", Settings{}, &wirepb.ServiceDefinition{BinaryPath: bin, PerVersionBinaryDir: binDir})
	old := h.negotiate("echo", "1.0.0")

	// Install a different build: same program, one byte appended (a new hash).
	tmp := bin + ".new"
	testutil.CopyFile(t, bin, tmp, 0o755)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0})
	f.Close()
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	fresh := h.negotiate("echo", "1.0.0")
	if fresh.BackendPipe == old.BackendPipe {
		t.Fatal("new Hello went to the backend of the replaced binary")
	}
	echoThrough(t, old.BackendPipe) // the old one keeps serving its clients
	echoThrough(t, fresh.BackendPipe)
	if again := h.negotiate("echo", "1.0.0"); again.BackendPipe != fresh.BackendPipe {
		t.Fatal("the new build's backend was not reused")
	}
	if n := len(h.reg.List()); n != 2 {
		t.Fatalf("%d registry entries, want old and new", n)
	}
}

func TestShutdownStopsAllChildren(t *testing.T) {
	h := newHarness(t)
	h.service("a", Settings{}, nil)
	h.service("b", Settings{}, nil)
	h.service("stubborn", Settings{StartTimeout: 5 * time.Second}, nil)
	h.behave("stubborn", "hang")
	pa := h.pidOf(h.negotiate("a", "1.0.0").BackendPipe)
	pb := h.pidOf(h.negotiate("b", "1.0.0").BackendPipe)
	// A child still starting is stopped too, and its Hello is told the broker is going.
	got := make(chan *wirepb.HelloReply, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		hr, _ := hello(h.sock, "stubborn", "1.0.0")
		got <- hr
	})
	ps := h.firstAttempt("stubborn")
	testutil.WaitForErr(t, 10*time.Second, func() error {
		if !ignoresSIGTERM(ps) {
			return fmt.Errorf("stubborn child %d does not ignore SIGTERM yet", ps)
		}
		return nil
	})
	h.cancel() // the Manager stops first; the loop is still up to answer the Hello
	select {
	case err := <-h.runDone:
		h.runDone <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	wg.Wait()
	if hr := <-got; hr.GetRefused().GetCode() != wirepb.ErrorCode_ERROR_SHUTTING_DOWN {
		t.Errorf("Hello during shutdown: %v", hr)
	}
	for _, pid := range []int{pa, pb, ps} {
		if s := procState(pid); s != "" {
			t.Errorf("pid %d survived Run in state %s", pid, s)
		}
		if ev := h.waitEvent(wirepb.EventKind_DIED_SHUTDOWN, pid); pid == ps && ev.Status != "signal: killed" {
			t.Errorf("stubborn child status %q, want SIGKILL after the grace", ev.Status)
		}
	}
	if len(h.reg.List()) != 0 {
		t.Error("registry not empty after shutdown")
	}
	if r := h.refused("a", "1.0.0"); r.Code != wirepb.ErrorCode_ERROR_SHUTTING_DOWN {
		t.Errorf("Hello after Run: %v", r)
	}
}

func TestDistinctKeysSpawnIndependently(t *testing.T) {
	h := newHarness(t)
	h.service("slow", Settings{StartTimeout: 5 * time.Second}, nil)
	h.service("echo", Settings{}, nil)
	h.behave("slow", "hang")
	got := make(chan *wirepb.HelloReply, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		hr, _ := hello(h.sock, "slow", "1.0.0")
		got <- hr
	})
	h.firstAttempt("slow")
	// While slow's spawn is in flight, another key spawns and serves.
	n := h.negotiate("echo", "1.0.0")
	echoThrough(t, n.BackendPipe)
	// echo's start stays counted (it is young); slow's is in flight.
	if b := h.m.Budgets(); len(b) != 2 || b[0].ServiceName != "echo" || b[0].InFlight ||
		b[1].ServiceName != "slow" || !b[1].InFlight || b[1].AttemptsUsed != 1 {
		t.Errorf("Budgets() = %+v, want echo counted and slow in flight", b)
	}
	select {
	case hr := <-got:
		t.Fatalf("slow Hello answered early: %v", hr)
	default:
	}
	h.stop()
	if hr := <-got; hr.GetRefused().GetCode() != wirepb.ErrorCode_ERROR_SHUTTING_DOWN {
		t.Errorf("in-flight Hello at shutdown: %v", hr)
	}
}
