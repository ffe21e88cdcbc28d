package launch

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// As in cmd/broker: the main goroutine stays on the main thread, where the upgrader
// (envRole=upgrader) starts its children and execs.
func init() { runtime.LockOSThread() }

// upgrader is a broker in miniature that upgrades itself in place: a Manager on the main
// thread spawns a backend, then the process re-execs itself and a new Manager adopts the
// backend. It talks to the test line by line: stdout reports, stdin commands.
func runUpgrader(ctx context.Context) int {
	if err := upgrader(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "upgrader:", err)
		return 1
	}
	return 0
}

func upgrader(ctx context.Context) error {
	dir, binDir := os.Getenv(envBrokerDir), os.Getenv(envBrokerBin)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LAUNCHER_TEST_") {
			env = append(env, kv)
		}
	}
	died := make(chan Event, 16)
	st, restored, err := upgrade.Restore(nil)
	if err != nil {
		return err
	}
	var adopt *Adoption
	adopted := make(chan error, 1)
	if restored {
		adopt = &Adoption{Children: handedFrom(st), Budgets: budgetsFrom(st), Timeout: 5 * time.Second,
			Done: func(n int, err error) { adopted <- err }}
	}
	m := New(Options{
		Adopt:   adopt,
		Layout:  names.Layout{Dir: filepath.Join(dir, "run"), SID: testSID},
		Log:     zerolog.New(os.Stderr),
		Environ: append(env, envRole+"=backend", "GORACE=atexit_sleep_ms=0"),
		Thread:  osthread.FromContext(ctx),
		Events: func(e Event) {
			if e.Kind == wirepb.EventKind_DIED_CRASH {
				died <- e
			}
		},
	})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(runCtx) }()
	req := &serve.Request{
		Hello:    &wirepb.Hello{ServiceName: "echo", WantedVersion: "1.0.0"},
		Def:      &wirepb.ServiceDefinition{ServiceName: "echo", BinaryPath: filepath.Join(binDir, "backend"), PerVersionBinaryDir: binDir},
		Instance: "private:echo",
	}
	in := bufio.NewReader(os.Stdin)
	if !restored {
		rt, err := m.Router(Settings{IdleTimeout: time.Hour}).Route(ctx, req)
		if err != nil {
			return fmt.Errorf("route: %w", err)
		}
		fmt.Printf("before pid=%d backend=%d pipe=%s\n", os.Getpid(), m.Backends()[0].PID, rt.Pipe)
		if _, err := in.ReadString('\n'); err != nil {
			return err
		}
		return handOver(osthread.FromContext(ctx), m)
	}
	if err := <-adopted; err != nil {
		return err
	}
	<-m.Started()
	b := m.Backends()
	if len(b) != 1 {
		return fmt.Errorf("after the exec: %d backends", len(b))
	}
	fmt.Printf("after pid=%d backend=%d state=%s\n", os.Getpid(), b[0].PID, b[0].State)
	e := <-died // the test kills the backend
	fmt.Printf("died pid=%d status=%q\n", e.PID, e.Status)
	if _, err := m.Router(Settings{IdleTimeout: time.Hour}).Route(ctx, req); err != nil {
		return fmt.Errorf("route after the crash: %w", err)
	}
	fmt.Printf("respawned backend=%d attempts=%d\n", m.Backends()[0].PID, m.Budgets()[0].AttemptsUsed)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	stop()
	return <-runDone
}

// handOver keeps the Manager's children and execs this binary again, on the main thread.
func handOver(main *osthread.Thread, m *Manager) error {
	handed, budgets := m.Handover()
	var h upgrade.Handover
	st := &statepb.State{Pid: int32(os.Getpid())}
	for _, c := range handed {
		b := &statepb.Backend{Pid: int32(c.PID), Endpoint: c.Endpoint, Instance: c.Key.Instance, Service: c.Key.Service,
			Version: c.Key.Version, ExeHash: c.Key.ExeHash[:], Binary: c.Binary, StartedUnixNano: c.Started.UnixNano(),
			LastUsedUnixNano: c.LastUsed.UnixNano(), IdleTimeoutNanos: int64(c.Idle), Pidfd: -1}
		var err error
		if b.StdoutFd, err = h.KeepConn(c.Stdout, "stdout"); err != nil {
			return err
		}
		if b.StderrFd, err = h.KeepConn(c.Stderr, "stderr"); err != nil {
			return err
		}
		pidfd, err := unix.PidfdOpen(c.PID, 0)
		if err != nil {
			return err
		}
		b.Pidfd, err = h.Keep(pidfd, "pidfd")
		unix.Close(pidfd)
		if err != nil {
			return err
		}
		st.Backends = append(st.Backends, b)
	}
	for _, b := range budgets {
		st.Budgets = append(st.Budgets, &statepb.Budget{Instance: b.Key.Instance, Service: b.Key.Service,
			Version: b.Key.Version, ExeHash: b.Key.ExeHash[:], WindowStartUnixNano: b.Window.UnixNano(), Attempts: int32(b.Attempts)})
	}
	enc, err := upgrade.Encode(st)
	if err != nil {
		return err
	}
	mfd, err := upgrade.WriteMemfd(enc)
	if err != nil {
		return err
	}
	main.Do(func() { err = h.Exec(os.Args[0], os.Args, os.Environ(), mfd) })
	return err
}

func handedFrom(st *statepb.State) []Handed {
	var out []Handed
	for _, b := range st.GetBackends() {
		h := Handed{PID: int(b.GetPid()), Binary: b.GetBinary(), Endpoint: b.GetEndpoint(),
			Key:  registry.Key{Instance: b.GetInstance(), Service: b.GetService(), Version: b.GetVersion()},
			Idle: time.Duration(b.GetIdleTimeoutNanos()), Started: time.Unix(0, b.GetStartedUnixNano()),
			LastUsed: time.Unix(0, b.GetLastUsedUnixNano()), Pidfd: upgrade.File(b.GetPidfd(), "pidfd"),
			Stdout: upgrade.File(b.GetStdoutFd(), "stdout"), Stderr: upgrade.File(b.GetStderrFd(), "stderr")}
		copy(h.Key.ExeHash[:], b.GetExeHash())
		out = append(out, h)
	}
	return out
}

func budgetsFrom(st *statepb.State) []Budget {
	var out []Budget
	for _, b := range st.GetBudgets() {
		k := registry.Key{Instance: b.GetInstance(), Service: b.GetService(), Version: b.GetVersion()}
		copy(k.ExeHash[:], b.GetExeHash())
		out = append(out, Budget{Key: k, Window: time.Unix(0, b.GetWindowStartUnixNano()), Attempts: int(b.GetAttempts())})
	}
	return out
}

// TestAdoptAfterExec: a launched backend survives its broker's exec (same broker pid,
// same backend pid, still serving), is re-verified and published by the new image, and
// stays supervised: killed, it is reaped with DIED_CRASH and respawned on the next Hello,
// within the spawn budget carried across the exec.
func TestAdoptAfterExec(t *testing.T) {
	dir := testutil.ShortDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", envRole+"=upgrader", envBrokerDir+"="+dir, envBrokerBin+"="+testBinDir)
	stdin, out, stderr := testutil.StartPiped(t, cmd)
	next := func(format string, a ...any) {
		t.Helper()
		line, err := out.ReadString('\n')
		if _, serr := fmt.Sscanf(line, format, a...); err != nil || serr != nil {
			t.Fatalf("upgrader printed %q (%v, %v), want %q\n%s", line, err, serr, format, stderr.String())
		}
	}
	var pid, backendPID int
	var pipe string
	next("before pid=%d backend=%d pipe=%s\n", &pid, &backendPID, &pipe)
	if pid != cmd.Process.Pid {
		t.Fatalf("upgrader pid %d, started %d", pid, cmd.Process.Pid)
	}
	io.WriteString(stdin, "exec\n")

	var pid2, backend2 int
	var state string
	next("after pid=%d backend=%d state=%s\n", &pid2, &backend2, &state)
	if pid2 != pid || backend2 != backendPID || state != "running" {
		t.Fatalf("after the exec: pid %d backend %d %s; want pid %d backend %d running", pid2, backend2, state, pid, backendPID)
	}
	echoThrough(t, pipe)

	if err := syscall.Kill(backendPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var diedPID int
	var status string
	next("died pid=%d status=%q\n", &diedPID, &status)
	if diedPID != backendPID || status != "signal: killed" {
		t.Fatalf("died pid %d status %q; want pid %d killed", diedPID, status, backendPID)
	}
	var respawned, attempts int
	next("respawned backend=%d attempts=%d\n", &respawned, &attempts)
	if respawned == backendPID || attempts != 2 {
		t.Fatalf("respawned %d with %d attempts used; want a new pid and 2 (1 before the exec)", respawned, attempts)
	}
	io.WriteString(stdin, "stop\n")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("upgrader: %v\n%s", err, stderr.String())
	}
	waitGone(t, respawned, 10*time.Second)
}

// A pid that is not this process's child cannot be supervised: adoption refuses it.
func TestAdoptRefusesNonChild(t *testing.T) {
	var got error
	h := newHarness(t, func(o *Options) {
		o.Adopt = &Adoption{Children: []Handed{{PID: os.Getppid(), Endpoint: "/nonexistent/x.sock",
			Key: registry.Key{Service: "echo", Version: "1.0.0"}}}, Done: func(n int, err error) { got = err }}
	})
	<-h.m.Started()
	if got == nil || !strings.Contains(got.Error(), "is not a child of this broker") {
		t.Fatalf("adoption of the parent process: %v", got)
	}
	if b := h.m.Backends(); len(b) != 0 {
		t.Fatalf("backends after a refused adoption: %+v", b)
	}
}

// A handed child that does not answer the identity probe as itself is not published: it
// is stopped and reaped, with the reason in its DIED_CRASH event.
func TestAdoptStopsUnverifiedChild(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=backend", "GORACE=atexit_sleep_ms=0")
	beh := t.TempDir()
	cmd.Env = append(cmd.Env, envBehaviorDir+"="+beh, wire.EnvServiceName+"=mute")
	if err := os.WriteFile(filepath.Join(beh, "mute"), []byte("hang"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var got error
	h := newHarness(t, func(o *Options) {
		o.Adopt = &Adoption{Timeout: 300 * time.Millisecond, Done: func(n int, err error) { got = err },
			Children: []Handed{{PID: pid, Binary: os.Args[0], Endpoint: "/nonexistent/be.sock",
				Key: registry.Key{Instance: "shared", Service: "mute", Version: "1.0.0"}, Started: time.Now()}}}
	})
	<-h.m.Started()
	if got == nil || !strings.Contains(got.Error(), "not re-verified after an upgrade") {
		t.Fatalf("adoption of a child that does not answer: %v", got)
	}
	if b := h.reg.List(); len(b) != 0 {
		t.Fatalf("registry after a refused adoption: %+v", b)
	}
	ev := h.waitEvent(wirepb.EventKind_DIED_CRASH, pid)
	if !strings.Contains(ev.Reason, "not re-verified after an upgrade") || ev.Status != "signal: killed" {
		t.Fatalf("DIED_CRASH %+v; want the reason and a SIGKILL (the child ignores SIGTERM)", ev)
	}
	waitGone(t, pid, 5*time.Second)
}
