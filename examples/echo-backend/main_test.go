package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// build compiles the example into a temporary directory: the tests run the real program.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "echo-backend")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestEchoBackend(t *testing.T) {
	bin := build(t)
	cases := []struct {
		name   string
		launch bool
		sig    syscall.Signal
	}{
		{"registered mode, SIGTERM", false, syscall.SIGTERM},
		{"launch mode, SIGINT", true, syscall.SIGINT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := filepath.Join(testutil.ShortDir(t), "echo.sock")
			cmd := exec.Command(bin, "-endpoint", ep)
			if tc.launch {
				cmd = exec.Command(bin)
				cmd.ExtraFiles = []*os.File{listenerFile(t, ep)}
				cmd.Env = append(os.Environ(),
					wire.EnvListenerFD+"=3", wire.EnvBackendPipe+"="+ep,
					wire.EnvServiceName+"=echo", wire.EnvServiceVersion+"=2.0.0")
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			running := true
			t.Cleanup(func() {
				if running {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			})
			// Registered: the pid comes from SO_PEERCRED. Launched: we bound the listener,
			// so the child's pid must be given.
			expect := 0
			if tc.launch {
				expect = cmd.Process.Pid
			}
			var h identity.Hasher
			testutil.WaitForErr(t, 10*time.Second, func() error {
				p, err := identity.ProbeAndVerify(context.Background(), ep, &h, expect)
				if err == nil && int(p.Pid) != cmd.Process.Pid {
					t.Fatalf("verified pid %d, want %d", p.Pid, cmd.Process.Pid)
				}
				return err
			})
			for _, payload := range [][]byte{[]byte("hello\n"), {0x01, 0x02, 0x03}, bytes.Repeat([]byte{0xAB}, 256<<10)} {
				if echoed := testutil.RoundTrip(t, ep, payload); !bytes.Equal(echoed, payload) {
					t.Fatalf("echoed %d bytes, want %d", len(echoed), len(payload))
				}
			}

			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			running = false
			if err != nil {
				t.Fatalf("exit: %v\n%s", err, stderr.String())
			}
			line := fmt.Sprintf("pid=%d endpoint=%s", cmd.Process.Pid, ep)
			if !strings.Contains(stderr.String(), line) || strings.Count(stderr.String(), "\n") != 1 {
				t.Fatalf("stderr %q, want one line with %q", stderr.String(), line)
			}
			_, err = os.Stat(ep)
			if tc.launch != (err == nil) { // a launched backend leaves the broker's path alone
				t.Fatalf("socket after exit: %v (launch mode %v)", err, tc.launch)
			}
		})
	}
}

func TestUsageAndBindErrors(t *testing.T) {
	bin := build(t)
	dir := testutil.ShortDir(t)
	live := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-nope"}, 2, "flag provided but not defined"},
		{[]string{"-endpoint", live}, 1, "in use by another process"},
		{[]string{"-endpoint", filepath.Join(dir, "missing", "x.sock")}, 1, "no such file"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = withoutLaunchEnv()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(string(out), tc.msg) {
			t.Errorf("%v: exit %v, output %q; want code %d and %q", tc.args, err, out, tc.code, tc.msg)
		}
	}
}

func withoutLaunchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNING_PROCESS_") {
			env = append(env, kv)
		}
	}
	return env
}

// listenerFile binds ep the way a broker does and returns the fd to pass to the child.
func listenerFile(t *testing.T, ep string) *os.File {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ep, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The default endpoint lives under the user's home, in a directory the program creates
// with mode 0700: a per-user path, not a shared one in /tmp.
func TestDefaultEndpointIsPerUser(t *testing.T) {
	bin := build(t)
	home := testutil.ShortDir(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "HOME="+home)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sock := filepath.Join(home, ".cache", "rpb-echo", "backend.sock")
	testutil.WaitFor(t, "the default endpoint to be bound", func() bool {
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Fatalf("socket directory mode %o, want 700", perm)
	}
}
