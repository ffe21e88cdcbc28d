// Package handofftest runs real backend processes for handoff tests: the test binary
// re-executes itself as a backend in one of a few modes. Call MaybeChild first in
// TestMain.
package handofftest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
)

// Backend is a running child.
type Backend struct {
	Cmd      *exec.Cmd
	Endpoint string // "" in Peek mode
	Handoff  string
	stderr   *testutil.SyncBuffer
}

// PID of the child.
func (b *Backend) PID() int { return b.Cmd.Process.Pid }

// Stderr returns what the child wrote so far.
func (b *Backend) Stderr() string { return b.stderr.String() }

// Start runs the test binary as a backend in mode, with sockets in dir, and waits until it
// listens. uid >= 0 runs it as that user (needs root; the binary is copied where that
// user can run it).
func Start(t testing.TB, mode, dir string, uid int) *Backend {
	t.Helper()
	b := Spawn(t, mode, dir, uid)
	b.Ready(t)
	return b
}

// StartAll starts one backend per mode, in dir as our uid, side by side, and waits until
// every one listens.
func StartAll(t testing.TB, dir string, modes ...string) map[string]*Backend {
	t.Helper()
	bes := make(map[string]*Backend, len(modes))
	for _, m := range modes {
		bes[m] = Spawn(t, m, dir, -1)
	}
	for _, m := range modes {
		bes[m].Ready(t)
	}
	return bes
}

// Spawn starts the child without waiting (start several, then call Ready on each).
func Spawn(t testing.TB, mode, dir string, uid int) *Backend {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{Handoff: filepath.Join(dir, mode+"-h.sock"), stderr: &testutil.SyncBuffer{}}
	if mode != Peek {
		b.Endpoint = filepath.Join(dir, mode+"-be.sock")
	}
	cmd := exec.Command(exe)
	if uid >= 0 {
		// The child must be able to bind in dir and to run a copy of the binary.
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "backend-"+strconv.Itoa(uid))
		testutil.CopyFile(t, exe, bin, 0o755)
		cmd = exec.Command(bin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	// A -race child otherwise sleeps 1 s at exit.
	cmd.Env = append(os.Environ(), envMode+"="+mode, envEP+"="+b.Endpoint, envHandoff+"="+b.Handoff, "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.Cmd = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return b
}

// Ready waits until the child accepts on its sockets.
func (b *Backend) Ready(t testing.TB) {
	t.Helper()
	for _, ep := range []string{b.Endpoint, b.Handoff} {
		if ep != "" {
			waitDial(t, ep, b)
		}
	}
}

func waitDial(t testing.TB, ep string, b *Backend) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", ep)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %s never listened on %s: %v\n%s", b.Cmd.Path, ep, err, b.Stderr())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// OpenFDs counts this process's open descriptors.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory being read
}
