package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/admin"
)

// startOpts starts a supervisor on e's config with o (Load and Log filled in), logging
// into the test output and into the returned buffer.
func (e *env) startOpts(o Options) (*running, *testutil.SyncBuffer) {
	e.t.Helper()
	buf := &testutil.SyncBuffer{}
	o.Load = func() (*config.Config, error) { return config.Load(e.cfgPath, config.LoadOptions{Environ: []string{}}) }
	o.Log = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(e.t), buf))
	sup, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sup: sup, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- sup.Run(ctx) }()
	e.t.Cleanup(func() { r.shutdown(e.t) })
	return r, buf
}

// TestStartFailsFast: a service whose socket cannot be bound for a permanent reason makes
// Run return at once with an error naming the service, the path and the reason, and
// nothing is served, not even the services that could have been (all or nothing).
func TestStartFailsFast(t *testing.T) {
	cases := append(unbindable[:len(unbindable):len(unbindable)], []struct {
		name string
		make func(t *testing.T, dir string) (path, reason string)
	}{
		{"in use by a live process", func(t *testing.T, dir string) (string, string) {
			p := filepath.Join(dir, "live.sock")
			ln, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return p, "in use by pid " + strconv.Itoa(os.Getpid())
		}},
		{"directory owned by another user", func(t *testing.T, dir string) (string, string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to chown")
			}
			d := filepath.Join(dir, "theirs")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(d, "s.sock"), "owned by uid 65534"
		}},
		{"missing directory outside runtime_dir", func(t *testing.T, dir string) (string, string) {
			other := testutil.ShortDir(t) // not under runtime_dir
			if os.Geteuid() != 0 {
				os.Chown(other, 65534, 65534) // best effort: as non-root the test is about ownership
			}
			return filepath.Join(other, "new", "s.sock"), "does not exist"
		}},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			be, _ := startBackend(t, e.dir)
			bad, reason := tc.make(t, e.dir)
			e.writeConfig(registeredService("ok", "1.0.0", be, e.sock("ok")) +
				registeredService("bad", "1.0.0", be, bad))
			r, _ := e.startOpts(Options{})
			var err error
			select {
			case err = <-r.done:
				close(r.done)
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not fail fast")
			}
			var se *StartError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), `service "bad"`) ||
				!strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), reason) {
				t.Fatalf("Run = %v; want a StartError naming service \"bad\", %s and %q", err, bad, reason)
			}
			if _, err := os.Lstat(e.sock("ok")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the good service's socket must not be left bound or behind: %v", err)
			}
		})
	}
}

// TestSocketRemovedIsRebound: rm of a serving control socket is noticed and the path is
// bound again, logged; a file put in its place shows as the runner's
// state "binding" with the reason until the path is free again.
func TestSocketRemovedIsRebound(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	r, logs := e.startOpts(Options{})
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))
	if err := os.Remove(e.sock("svc")); err != nil {
		t.Fatal(err)
	}
	// (The new socket may reuse the old inode number, so the log says it was rebound.)
	testutil.WaitFor(t, "the rebind to be logged", func() bool {
		return strings.Contains(logs.String(), "control socket removed from under the broker; rebinding")
	})
	testutil.WaitFor(t, "svc to negotiate on the new socket", negotiates(e.sock("svc"), "svc", "1.0.0"))

	// A regular file in its place: the runner retries and says why.
	if err := os.Remove(e.sock("svc")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.sock("svc"), []byte("squatter"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := func() admin.ServiceStatus { return r.sup.serviceStatuses()[0] }
	testutil.WaitFor(t, "state binding: not a socket", func() bool {
		st := state()
		return st.State == admin.StateBinding && strings.Contains(st.Reason, "is not a socket")
	})
	os.Remove(e.sock("svc"))
	testutil.WaitFor(t, "svc to serve again", func() bool { return state().State == admin.StateServing })
	testutil.WaitFor(t, "svc to negotiate again", negotiates(e.sock("svc"), "svc", "1.0.0"))
}

// TestInheritedListenerServes: a listener handed over in Options.Inherited for a
// service's socket path serves that service (same inode, no bind), and the broker does
// not unlink it on shutdown; "broker started" names version, config and sockets.
func TestInheritedListenerServes(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	path := e.sock("svc")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ino := inode(t, path)
	e.writeConfig(registeredService("svc", "1.0.0", be, path) + registeredService("own", "1.0.0", be, e.sock("own")))
	r, logs := e.startOpts(Options{Inherited: map[string]*net.UnixListener{path: ln}, Version: "1.2.3-test"})
	testutil.WaitFor(t, "svc to negotiate", negotiates(path, "svc", "1.0.0"))
	if inode(t, path) != ino {
		t.Fatal("the inherited socket was replaced by a bind")
	}
	testutil.WaitFor(t, "broker started to be logged", func() bool { return strings.Contains(logs.String(), "broker started") })
	for _, want := range []string{`"version":"1.2.3-test"`, `"config":"` + e.cfgPath, `"svc=` + path, `"own=` + e.sock("own")} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("broker started line lacks %s:\n%s", want, logs)
		}
	}
	r.shutdown(t)
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the inherited socket was unlinked: %v", err)
	}
	if _, err := os.Lstat(e.sock("own")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("our own socket should be removed on shutdown: %v", err)
	}
}
