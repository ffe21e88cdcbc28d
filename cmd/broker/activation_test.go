package main

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
)

// TestSocketActivationSystemdSocketActivate runs the built broker the way systemd does:
// systemd-socket-activate binds alpha's socket and starts the broker on the first
// connection, which carries the Hello that must be answered. The broker leaves the socket
// it did not create in place when it stops.
func TestSocketActivationSystemdSocketActivate(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-socket-activate is missing in CI: .ci/run installs the systemd package")
		}
		t.Skip("systemd-socket-activate is not installed (apt-get install systemd)")
	}
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	out := &testutil.SyncBuffer{}
	cmd := exec.Command(activate, "-l", e.sock("alpha"),
		"-E", envRunBroker+"=1", "-E", "RP_BROKER_LOG_FORMAT=json", "-E", "HOME", "-E", "PATH",
		os.Args[0], "-c", e.cfg)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// It logs this after listen(2); the socket file exists from bind(2) on, too early.
	testutil.WaitFor(t, "systemd-socket-activate to listen", func() bool { return strings.Contains(out.String(), "Listening on") })

	// This connection starts the broker; its Hello is the first one it serves.
	if err := hello(e.sock("alpha"), "alpha"); err != nil {
		t.Fatalf("the Hello that activated the broker: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "serving on a socket passed by systemd") {
		t.Fatalf("the broker bound the socket itself instead of using the passed one:\n%s", out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, out)
	}
	if !fileExists(e.sock("alpha")) {
		t.Fatal("the broker unlinked a socket systemd created")
	}
}

// TestSocketActivationPassedFDs passes two listening sockets the same way systemd does
// (fds 3 and 4, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID set by the exec'ing shell): the one
// at alpha's path serves alpha; the other matches no service and is logged and closed.
func TestSocketActivationPassedFDs(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	stray := e.sock("stray")
	var files []*os.File
	for _, path := range []string{e.sock("alpha"), stray} {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		files = append(files, f)
	}
	out := &testutil.SyncBuffer{}
	// exec keeps the shell's pid, so $$ is the broker's pid: LISTEN_PID must name it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, os.Args[0], "-c", e.cfg)
	cmd.Env = append(os.Environ(), envRunBroker+"=1", "RP_BROKER_LOG_FORMAT=json",
		"LISTEN_FDS=2", "LISTEN_FDNAMES=alpha:stray")
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for _, f := range files {
		f.Close() // the broker holds the only copies now
	}

	testutil.WaitFor(t, "alpha to negotiate on the passed socket", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	testutil.WaitFor(t, "the stray socket to be logged", func() bool {
		return strings.Contains(out.String(), "passed socket matches no service's socket") && strings.Contains(out.String(), stray)
	})
	testutil.WaitFor(t, "the stray socket to be closed", func() bool { return !dialable(stray) })
	if !strings.Contains(out.String(), "serving on a socket passed by systemd") {
		t.Fatalf("alpha's socket was not taken from LISTEN_FDS:\n%s", out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, out)
	}
	if !fileExists(e.sock("alpha")) {
		t.Fatal("the broker unlinked a passed socket")
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
