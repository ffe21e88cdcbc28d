package registered_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/supervisor/registered"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	service  = "echo"
	version  = "1.0.0"
	instance = "private:echo"
	// nobody, for the foreign-uid cases (they need root).
	otherUID = 65534
	// msgDown is the warning Run logs, with the probe error, when a probe fails.
	msgDown = "registered backend is not available; re-probing"
)

// env is one registered.Backend under test, its Run loop going.
type env struct {
	b   *registered.Backend
	reg *registry.Registry
	log *testutil.SyncBuffer
	ep  string
}

// run starts a Backend for endpoint ep with o's verify mode and backoff, and stops it
// when the test ends. Run must leave the registry empty when it returns.
func run(t *testing.T, ep string, o registered.Options) *env {
	t.Helper()
	e := &env{reg: registry.New(), log: &testutil.SyncBuffer{}, ep: ep}
	o.Service, o.Version, o.Instance, o.Endpoint = service, version, instance, ep
	o.Registry = e.reg
	o.Log = zerolog.New(e.log)
	e.b = registered.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if l := e.reg.List(); len(l) != 0 {
			t.Errorf("registry after Run returned: %d entries, want none", len(l))
		}
	})
	return e
}

// route asks for a route as the serve loop would for a Hello wanting v.
func (e *env) route(v string) (serve.Route, error) {
	return e.b.Route(context.Background(), &serve.Request{
		Hello:    &wirepb.Hello{ServiceName: service, WantedVersion: v, ClientMinProtocol: 1, ClientMaxProtocol: 1},
		Instance: instance,
	})
}

// wantRoute checks that a Hello for our version is routed to the endpoint.
func (e *env) wantRoute(t *testing.T) {
	t.Helper()
	r, err := e.route(version)
	if err != nil {
		t.Fatalf("Route: %v, want a route to %s", err, e.ep)
	}
	if r.Pipe != e.ep || r.Version != version || r.Token != nil || r.BeforeReply != nil || r.AfterReply != nil {
		t.Fatalf("Route = %+v, want pipe %s, version %s and no handoff", r, e.ep, version)
	}
}

// wantRefused checks the refusal of a Hello while the backend is not verified
// (docs/protocol.md, "The dispatch order", row 24).
func (e *env) wantRefused(t *testing.T, v string) {
	t.Helper()
	r, err := e.route(v)
	var ref wire.Refusal
	if !errors.As(err, &ref) {
		t.Fatalf("Route(%s) = %+v, %v; want a refusal", v, r, err)
	}
	if ref.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED || ref.Reason != wire.ReasonNotRegistered {
		t.Fatalf("Route(%s) refused %v %q; want BACKEND_SPAWN_FAILED %q", v, ref.Code, ref.Reason, wire.ReasonNotRegistered)
	}
}

// waitVerified waits until the backend with pid is the verified one, and checks its
// registry entry.
func (e *env) waitVerified(t *testing.T, pid int) *registry.Backend {
	t.Helper()
	testutil.WaitForErr(t, 15*time.Second, func() error {
		cur := e.b.Current()
		if cur == nil || cur.PID != pid {
			return fmt.Errorf("current backend %v, want pid %d; log:\n%s", cur, pid, e.log)
		}
		return nil
	})
	cur := e.b.Current()
	if cur.Pipe != e.ep || cur.Mode != "registered" {
		t.Fatalf("verified backend pipe %q mode %q, want %q registered", cur.Pipe, cur.Mode, e.ep)
	}
	if got := e.reg.Lookup(instance, service, version); got != cur {
		t.Fatalf("registry lookup = %v, want the verified backend %v", got, cur)
	}
	return cur
}

// logLines decodes the JSON log.
func (e *env) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.log.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// probeErrors are the errors of the "not available" warnings logged so far.
func (e *env) probeErrors(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range e.logLines(t) {
		if m["message"] == msgDown {
			s, _ := m["error"].(string)
			out = append(out, s)
		}
	}
	return out
}

// waitProbeError waits until a probe failed with an error containing want.
func (e *env) waitProbeError(t *testing.T, want string) {
	t.Helper()
	testutil.WaitForErr(t, 15*time.Second, func() error {
		for _, s := range e.probeErrors(t) {
			if strings.Contains(s, want) {
				return nil
			}
		}
		return fmt.Errorf("no probe error containing %q; log:\n%s", want, e.log)
	})
}

// events counts the log lines with event ev.
func (e *env) events(t *testing.T, ev string) int {
	t.Helper()
	n := 0
	for _, m := range e.logLines(t) {
		if m["event"] == ev {
			n++
		}
	}
	return n
}

// child is a raw backend process (see main_test.go).
type child struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// kill ends the child with SIGKILL and reaps it.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// conns is when the child accepted each connection, since it started.
func (c *child) conns(t *testing.T) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, l := range strings.Split(c.stderr.String(), "\n") {
		if ns, ok := strings.CutPrefix(l, "conn "); ok {
			n, err := strconv.ParseInt(ns, 10, 64)
			if err != nil {
				t.Fatalf("child line %q: %v", l, err)
			}
			out = append(out, time.Duration(n))
		}
	}
	return out
}

// spawnRaw runs the test binary as a raw backend in mode at ep and waits until it
// listens (it reports so; a dial would count as a probe).
func spawnRaw(t *testing.T, mode, ep, arg string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe), stderr: &testutil.SyncBuffer{}}
	c.cmd.Env = append(os.Environ(), envMode+"="+mode, envEP+"="+ep, envArg+"="+arg)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	testutil.WaitForErr(t, 15*time.Second, func() error {
		if strings.Contains(c.stderr.String(), "listening\n") {
			return nil
		}
		return fmt.Errorf("child %s never listened on %s: %s", mode, ep, c.stderr)
	})
	return c
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a backend as another user needs root")
	}
}

// TestProbe: a backend that answers the identity probe truthfully is verified and routed
// to; every other answer is refused, and the probe error logged names why
// (docs/protocol.md, "The identity probe (0xB232)").
func TestProbe(t *testing.T) {
	const mismatch = "did not match expected daemon identity: "
	cases := []struct {
		name string
		// start runs the backend in dir and returns its endpoint and the pid that must be
		// verified (0: none may be).
		start func(t *testing.T, dir string) (ep string, pid int)
		// wantErr is part of the probe error for a refused backend.
		wantErr string
	}{
		{
			name: "sdk backend",
			start: func(t *testing.T, dir string) (string, int) {
				be := handofftest.Start(t, handofftest.Echo, dir, -1)
				return be.Endpoint, be.PID()
			},
		},
		{
			name: "endpoint served by another process than the one answering",
			start: func(t *testing.T, dir string) (string, int) {
				be := handofftest.Start(t, handofftest.Echo, dir, -1)
				ep := filepath.Join(dir, "relay.sock")
				spawnRaw(t, modeRelay, ep, be.Endpoint)
				return ep, 0
			},
			wantErr: mismatch + "pid",
		},
		{
			name:    "reports another pid",
			start:   rawStart(modeForge, "pid"),
			wantErr: mismatch + "pid",
		},
		{
			name:    "reports another executable",
			start:   rawStart(modeForge, "exe"),
			wantErr: mismatch + "exe_path",
		},
		{
			name:    "reports another executable hash",
			start:   rawStart(modeForge, "hash"),
			wantErr: mismatch + "exe_hash",
		},
		{
			name:    "reports another endpoint",
			start:   rawStart(modeForge, "endpoint"),
			wantErr: mismatch + "ipc_endpoint",
		},
		{
			name:    "answers garbage",
			start:   rawStart(modeGarbage, ""),
			wantErr: identity.ErrMalformed.Error(),
		},
		{
			name:    "does not speak the probe",
			start:   rawStart(modePlain, ""),
			wantErr: identity.ErrNoResponse.Error(),
		},
		{
			name: "another user's backend",
			start: func(t *testing.T, dir string) (string, int) {
				needRoot(t)
				be := handofftest.Start(t, handofftest.Echo, dir, otherUID)
				return be.Endpoint, 0
			},
			wantErr: identity.ErrForeignUID.Error(),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.ShortDir(t)
			ep, pid := tc.start(t, dir)
			e := run(t, ep, registered.Options{MaxBackoff: 250 * time.Millisecond})
			if tc.wantErr == "" {
				cur := e.waitVerified(t, pid)
				exe, err := os.Executable()
				if err != nil {
					t.Fatal(err)
				}
				sum, err := identity.HashFile(exe)
				if err != nil {
					t.Fatal(err)
				}
				if cur.Key.ExeHash != sum {
					t.Errorf("registry key hash %x, want the backend's executable %x", cur.Key.ExeHash, sum)
				}
				e.wantRoute(t)
				if cur.LastHello().IsZero() {
					t.Errorf("a routed Hello was not recorded on the backend")
				}
				e.wantRefused(t, "2.0.0") // another version is not this backend
				return
			}
			e.waitProbeError(t, tc.wantErr)
			if cur := e.b.Current(); cur != nil {
				t.Fatalf("backend pid %d verified; the probe should have failed with %q", cur.PID, tc.wantErr)
			}
			if n := e.events(t, "backend_up"); n != 0 {
				t.Fatalf("backend verified %d times; log:\n%s", n, e.log)
			}
			if l := e.reg.List(); len(l) != 0 {
				t.Fatalf("registry holds %d entries for a backend that failed the probe", len(l))
			}
			e.wantRefused(t, version)
		})
	}
}

// rawStart starts a raw child in mode at dir/raw.sock.
func rawStart(mode, arg string) func(t *testing.T, dir string) (string, int) {
	return func(t *testing.T, dir string) (string, int) {
		ep := filepath.Join(dir, "raw.sock")
		spawnRaw(t, mode, ep, arg)
		return ep, 0
	}
}

// TestReprobe: a backend that is not up when Run starts is refused "backend is not
// registered" (docs/protocol.md, "The dispatch order", row 24) and picked up once it
// comes up; between failed probes Run backs off, doubling the wait from MinBackoff.
func TestReprobe(t *testing.T) {
	t.Run("endpoint absent at start", func(t *testing.T) {
		dir := testutil.ShortDir(t)
		ep := filepath.Join(dir, handofftest.Echo+"-be.sock") // where handofftest binds it
		e := run(t, ep, registered.Options{MaxBackoff: 250 * time.Millisecond})
		e.waitProbeError(t, identity.ErrUnreachable.Error())
		e.wantRefused(t, version)
		be := handofftest.Start(t, handofftest.Echo, dir, -1)
		if be.Endpoint != ep {
			t.Fatalf("handofftest bound %s, want %s", be.Endpoint, ep)
		}
		e.waitVerified(t, be.PID())
		e.wantRoute(t)
		// The same failure is logged once, not per probe. (Others may follow it while
		// the backend starts: between its bind and its listen a connect is refused.)
		n := 0
		for _, s := range e.probeErrors(t) {
			if strings.Contains(s, "no such file or directory") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d warnings for the absent endpoint, want 1; log:\n%s", n, e.log)
		}
	})

	// A backend that bound its socket but closes its first probes unanswered: it sees
	// every probe, so the gaps between them show the backoff.
	const unanswered = 5
	const minBackoff = 20 * time.Millisecond
	t.Run("bound but not ready", func(t *testing.T) {
		dir := testutil.ShortDir(t)
		ep := filepath.Join(dir, "late.sock")
		c := spawnRaw(t, modeAnswer, ep, strconv.Itoa(unanswered))
		e := run(t, ep, registered.Options{MinBackoff: minBackoff, MaxBackoff: time.Minute})
		e.waitProbeError(t, identity.ErrNoResponse.Error())
		e.wantRefused(t, version)
		e.waitVerified(t, c.pid())
		e.wantRoute(t)
		conns := c.conns(t)
		if len(conns) < unanswered+1 {
			t.Fatalf("backend saw %d probes before it was verified, want at least %d", len(conns), unanswered+1)
		}
		// The child stamps a probe before closing it, Run waits its backoff after seeing
		// the close, and the next probe is stamped after its connect: each gap is at least
		// that backoff, however slow the machine. The backoff doubles from minBackoff; half
		// of it is the bound, leaving room for a jitter, and still fails a wait that does
		// not grow.
		wait := minBackoff
		for i := range unanswered {
			if gap := conns[i+1] - conns[i]; gap < wait/2 {
				t.Errorf("gap after probe %d: %v, want at least %v (probes at %v)", i+1, gap, wait/2, conns)
			}
			wait *= 2
		}
	})
}

// TestVerifyConnect: with verify = "connect" an endpoint of our uid that accepts is
// verified without the probe; one that does not accept, or runs as another user, is not
// (docs/protocol.md, "The identity probe (0xB232)").
func TestVerifyConnect(t *testing.T) {
	cases := []struct {
		name    string
		start   func(t *testing.T, dir string) (ep string, pid int)
		wantErr string // part of the error of a refused endpoint
	}{
		{
			name: "plain listener of our uid",
			start: func(t *testing.T, dir string) (string, int) {
				ep := filepath.Join(dir, "plain.sock")
				return ep, spawnRaw(t, modePlain, ep, "").pid()
			},
		},
		{
			name: "stale socket nobody listens on",
			start: func(t *testing.T, dir string) (string, int) {
				ep := filepath.Join(dir, "stale.sock")
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ep, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				ln.SetUnlinkOnClose(false)
				ln.Close()
				return ep, 0
			},
			wantErr: "connection refused",
		},
		{
			name: "no socket",
			start: func(t *testing.T, dir string) (string, int) {
				return filepath.Join(dir, "none.sock"), 0
			},
			wantErr: "no such file or directory",
		},
		{
			name: "not a socket",
			start: func(t *testing.T, dir string) (string, int) {
				ep := filepath.Join(dir, "file.sock")
				if err := os.WriteFile(ep, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return ep, 0
			},
			wantErr: identity.ErrUnreachable.Error(),
		},
		{
			name: "another user's listener",
			start: func(t *testing.T, dir string) (string, int) {
				needRoot(t)
				return handofftest.Start(t, handofftest.Echo, dir, otherUID).Endpoint, 0
			},
			wantErr: identity.ErrForeignUID.Error(),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.ShortDir(t)
			ep, pid := tc.start(t, dir)
			e := run(t, ep, registered.Options{Verify: registered.VerifyConnect, MaxBackoff: 250 * time.Millisecond})
			if tc.wantErr == "" {
				e.waitVerified(t, pid)
				e.wantRoute(t)
				return
			}
			e.waitProbeError(t, tc.wantErr)
			if cur := e.b.Current(); cur != nil {
				t.Fatalf("endpoint verified as pid %d; want refused with %q", cur.PID, tc.wantErr)
			}
			if l := e.reg.List(); len(l) != 0 {
				t.Fatalf("registry holds %d entries for an endpoint that failed the check", len(l))
			}
			e.wantRefused(t, version)
		})
	}
}

// TestBackendVanishes: a verified backend is killed; the next Hello is refused rather
// than sent to a dead pipe, the registry entry goes, and the backend restarted at the
// same endpoint is verified again (docs/architecture.md, "The rooms": the registry is
// pruned through pidfds).
func TestBackendVanishes(t *testing.T) {
	type backend struct {
		ep   string
		pid  int
		kill func()
	}
	cases := []struct {
		name   string
		verify string
		start  func(t *testing.T, dir string) backend
	}{
		{
			name:   "probe",
			verify: registered.VerifyProbe,
			start: func(t *testing.T, dir string) backend {
				be := handofftest.Start(t, handofftest.Echo, dir, -1)
				return backend{be.Endpoint, be.PID(), func() { be.Cmd.Process.Kill(); be.Cmd.Wait() }}
			},
		},
		{
			name:   "connect",
			verify: registered.VerifyConnect,
			start: func(t *testing.T, dir string) backend {
				c := spawnRaw(t, modePlain, filepath.Join(dir, "plain.sock"), "")
				return backend{filepath.Join(dir, "plain.sock"), c.pid(), c.kill}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.ShortDir(t)
			first := tc.start(t, dir)
			e := run(t, first.ep, registered.Options{Verify: tc.verify, MaxBackoff: 250 * time.Millisecond})
			e.waitVerified(t, first.pid)
			e.wantRoute(t)

			first.kill() // SIGKILL, reaped: the process is gone now
			e.wantRefused(t, version)
			testutil.WaitFor(t, "the dead backend to leave the registry", func() bool {
				return len(e.reg.List()) == 0
			})
			if cur := e.b.Current(); cur != nil {
				t.Fatalf("dead backend pid %d still current", cur.PID)
			}
			testutil.WaitFor(t, "backend_down in the log", func() bool { return e.events(t, "backend_down") == 1 })
			e.wantLevel(t, "event", "backend_down", "info")
			e.wantRefused(t, version)

			second := tc.start(t, dir)
			if second.ep != first.ep {
				t.Fatalf("restarted at %s, want %s", second.ep, first.ep)
			}
			e.waitVerified(t, second.pid)
			e.wantRoute(t)
			if l := e.reg.List(); len(l) != 1 || l[0].PID != second.pid {
				t.Fatalf("registry after the restart: %v, want only pid %d", l, second.pid)
			}
			if n := e.events(t, "backend_up"); n != 2 {
				t.Errorf("backend_up logged %d times, want 2", n)
			}
		})
	}
}
