package backend_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
)

// A launched child adopts the listener the "broker" (this test) bound, answers the probe
// with its own identity, echoes data and leaves the broker's socket path alone on exit.
func TestInheritedListener(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ep := filepath.Join(testutil.ShortDir(t), "rpb-v1-test-be-0.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ep, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // the path outlives our copy of the listener
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(),
		"BACKEND_TEST_CHILD=1",
		wire.EnvListenerFD+"=3",
		wire.EnvBackendPipe+"="+ep,
		wire.EnvServiceName+"=echo",
		wire.EnvServiceVersion+"=1.0.0",
		wire.EnvIsDaemon+"=1",
	)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// SO_PEERCRED names whoever called listen — us — so verify against the child's pid.
	var h identity.Hasher
	testutil.WaitForErr(t, 10*time.Second, func() error {
		_, err := identity.ProbeAndVerify(context.Background(), ep, &h, cmd.Process.Pid)
		return err
	})
	res, err := identity.Probe(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	if res.PeerPID != os.Getpid() || int(res.Process.Pid) != cmd.Process.Pid {
		t.Fatalf("peer pid %d (want ours %d), reported pid %d (want child %d)",
			res.PeerPID, os.Getpid(), res.Process.Pid, cmd.Process.Pid)
	}
	if got := testutil.RoundTrip(t, ep, []byte("\x01through the inherited fd")); !bytes.Equal(got, []byte("\x01through the inherited fd")) {
		t.Fatalf("echo %q", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("child exit: %v", err)
	}
	if _, err := os.Stat(ep); err != nil {
		t.Fatalf("child removed the broker's socket: %v", err)
	}
}
