package launch

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// At start the Manager removes the backend sockets of this user that nobody listens on
// (left by a broker killed with SIGKILL) and keeps everything else.
func TestRunReclaimsStaleBackendSockets(t *testing.T) {
	var live *net.UnixListener
	paths := map[string]string{}
	h := newHarness(t, func(o *Options) {
		if err := os.Mkdir(o.Layout.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		leaf := func(rnd string) string { return filepath.Join(o.Layout.Dir, o.Layout.BackendLeaf(rnd)+".sock") }
		paths = map[string]string{
			"stale1":    leaf(strings.Repeat("a1", 16)),
			"stale2":    leaf(strings.Repeat("0f", 16)),
			"live":      leaf(strings.Repeat("b2", 16)),
			"regular":   leaf(strings.Repeat("c3", 16)),
			"otheruser": filepath.Join(o.Layout.Dir, "rpb-v1-fedcba9876543210-be-"+strings.Repeat("d4", 16)+".sock"),
			"shortname": leaf("d4"),
			"control":   filepath.Join(o.Layout.Dir, "rpb-v1-"+o.Layout.SID+"-svc-echo.sock"),
		}
		for _, k := range []string{"stale1", "stale2", "otheruser", "shortname", "control"} {
			staleSocket(t, paths[k])
		}
		var err error
		if live, err = net.ListenUnix("unix", &net.UnixAddr{Name: paths["live"], Net: "unix"}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { live.Close() })
		if err := os.WriteFile(paths["regular"], nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	h.service("echo", Settings{}, nil)
	// A routed Hello means Run is past its start, reclaim included.
	echoThrough(t, h.negotiate("echo", "1.0.0").BackendPipe)

	for name, path := range paths {
		_, err := os.Lstat(path)
		gone := errors.Is(err, os.ErrNotExist)
		if want := strings.HasPrefix(name, "stale"); gone != want {
			t.Errorf("%s (%s): removed=%v (%v), want removed=%v", name, filepath.Base(path), gone, err, want)
		}
	}
	c, err := net.Dial("unix", paths["live"])
	if err != nil {
		t.Fatalf("live backend socket broken: %v", err)
	}
	c.Close()
	for _, k := range []string{"stale1", "stale2"} {
		if !strings.Contains(h.log.String(), `"socket":"`+paths[k]+`","message":"reclaimed stale backend socket"`) {
			t.Errorf("reclaim of %s not logged:\n%s", k, h.log.String())
		}
	}
}

// staleSocket leaves a socket file at path with no listener, as a killed process does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to the stale socket %s: %v, want ECONNREFUSED", path, err)
	}
}
