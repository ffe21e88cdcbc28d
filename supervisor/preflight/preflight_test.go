package preflight

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
)

// TestDirRules: which socket directories the broker accepts, may create, or refuses.
func TestDirRules(t *testing.T) {
	root := testutil.ShortDir(t)
	runtime := filepath.Join(root, "run")
	mk := func(p string, mode os.FileMode) string {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	link := filepath.Join(root, "link")
	os.Symlink(mk(filepath.Join(root, "real"), 0o700), link)
	for _, tc := range []struct {
		name, dir, want string // want "" = accepted
	}{
		{"safe existing", mk(filepath.Join(root, "safe"), 0o700), ""},
		{"mode 0777", mk(filepath.Join(root, "open"), 0o777), "mode 0777"},
		{"mode 0755", mk(filepath.Join(root, "readable"), 0o755), "mode 0755"},
		{"symlink", link, "symlink"},
		{"a file", file, "not a directory"},
		{"missing runtime dir", runtime, ""},
		{"missing under runtime dir", filepath.Join(runtime, "a", "b"), ""},
		{"missing below a file", filepath.Join(file, "x"), "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Dir(tc.dir, runtime)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Dir(%s) = %v, want %q", tc.dir, err, tc.want)
			}
		})
	}
	// Outside runtime_dir a missing directory is created only by a non-root user inside a
	// directory it owns.
	err := Dir(filepath.Join(root, "elsewhere", "x"), runtime)
	if os.Geteuid() == 0 {
		if err == nil || !strings.Contains(err.Error(), "running as root") {
			t.Fatalf("root outside runtime_dir: %v", err)
		}
	} else if err != nil {
		t.Fatalf("own dir outside runtime_dir: %v", err)
	}
}

// TestSocketFree: nothing there or a stale socket is free; a file or a live listener is
// not, and a live one is named by its pid.
func TestSocketFree(t *testing.T) {
	dir := testutil.ShortDir(t)
	live := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stale := filepath.Join(dir, "stale.sock")
	sl, _ := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	sl.SetUnlinkOnClose(false)
	sl.Close()
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, nil, 0o600)

	if st, err := SocketFree(filepath.Join(dir, "none.sock")); st || err != nil {
		t.Errorf("free path: stale=%v err=%v", st, err)
	}
	if st, err := SocketFree(stale); !st || err != nil {
		t.Errorf("stale socket: stale=%v err=%v", st, err)
	}
	if _, err := SocketFree(file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("file: %v", err)
	}
	_, err = SocketFree(live)
	var inUse *InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrSocketInUse) || inUse.PID != int32(os.Getpid()) ||
		!strings.Contains(err.Error(), fmt.Sprintf("in use by pid %d", os.Getpid())) {
		t.Errorf("live socket: %v", err)
	}
	if _, err := SocketFree(filepath.Join(dir, strings.Repeat("x", 120)+".sock")); err == nil {
		t.Error("an over-long path must be refused")
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "listen", Err: os.NewSyscallError("socket", syscall.EMFILE)}, true},
		{fmt.Errorf("bind: %w", syscall.ENFILE), true},
		{fmt.Errorf("bind: %w", syscall.ENOMEM), true},
		{fmt.Errorf("bind: %w", syscall.EADDRINUSE), false},
		{errors.New("exists and is not a socket"), false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
