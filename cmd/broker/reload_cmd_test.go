package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
)

// TestReloadToUnbindableSocketExits1: `broker reload` of a config that moves a service to
// a socket the broker cannot bind exits 1 naming the service and the reason, and the
// broker keeps serving the old socket.
func TestReloadToUnbindableSocketExits1(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha", "beta")
	e.startBroker()
	testutil.WaitFor(t, "beta to negotiate", func() bool { return hello(e.sock("beta"), "beta") == nil })

	open := filepath.Join(e.dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	// beta moves into the open directory; alpha, first in the file, keeps its socket.
	moved := fmt.Sprintf("\n[[service]]\nname = \"beta\"\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n",
		e.backend(), filepath.Join(open, "beta.sock"))
	body, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cut := strings.Index(string(body), "\n[[service]]\nname = \"beta\"")
	if err := os.WriteFile(e.cfg, append(body[:cut:cut], moved...), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	code := runReload(context.Background(), []string{"-c", e.cfg}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `service "beta"`) || !strings.Contains(stderr.String(), "mode 0777") {
		t.Fatalf("reload: exit %d stdout %q stderr %q; want exit 1 naming beta and the directory mode", code, stdout.String(), stderr.String())
	}
	if err := hello(e.sock("beta"), "beta"); err != nil {
		t.Fatalf("beta's old socket must keep serving: %v", err)
	}
}

// TestReloadCommand runs the built `broker reload` against a real broker: a reload that
// moves every socket (the file names no socket the broker serves yet) is found through
// the process and applied; a rejected file exits 1 with the broker's error; a broker that
// does not answer makes --timeout fire, and say so, instead of a silent wait.
func TestReloadCommand(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha", "beta")
	broker, _ := e.startBroker()
	testutil.WaitFor(t, "beta to negotiate", func() bool { return hello(e.sock("beta"), "beta") == nil })

	// Every socket moves: alpha → alpha2, beta → beta2.
	e.writeConfig("", "alpha2", "beta2")
	body, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	body = []byte(strings.NewReplacer(`name = "alpha2"`, `name = "alpha"`, `name = "beta2"`, `name = "beta"`).Replace(string(body)))
	if err := os.WriteFile(e.cfg, body, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errOut, code := runCLI(t, nil, "reload", "-c", e.cfg)
	if code != 0 || !strings.Contains(out, "changed alpha: socket "+e.sock("alpha")+" → "+e.sock("alpha2")) ||
		!strings.Contains(out, "changed beta: socket") {
		t.Fatalf("reload moving every socket: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("reload moving every socket answered in %s", time.Since(start))
	for _, s := range []string{"alpha", "beta"} {
		if err := hello(e.sock(s+"2"), s); err != nil {
			t.Errorf("%s on its new socket: %v", s, err)
		}
	}

	// A rejected file: exit 1 with the broker's own error; the old sockets keep serving.
	good, _ := os.ReadFile(e.cfg)
	if err := os.WriteFile(e.cfg, append([]byte("bogus_key = 1\n"), good...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runCLI(t, nil, "reload", "-c", e.cfg)
	if code != 1 || out != "" || !strings.Contains(errOut, "rejected, the running config is unchanged") || !strings.Contains(errOut, "bogus_key") {
		t.Fatalf("rejected reload: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if err := hello(e.sock("alpha2"), "alpha"); err != nil {
		t.Fatalf("alpha after a rejected reload: %v", err)
	}

	// A broker that cannot answer (stopped): the timeout fires and says what to check.
	if err := broker.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer broker.Process.Signal(syscall.SIGCONT)
	start = time.Now()
	out, errOut, code = runCLI(t, nil, "reload", "-c", e.cfg, "--timeout", "300ms")
	took := time.Since(start)
	if code != 1 || !strings.Contains(errOut, "--timeout 300ms fired") || !strings.Contains(errOut, "log") || took > 5*time.Second {
		t.Fatalf("stopped broker: exit %d after %s\nstdout:\n%s\nstderr:\n%s", code, took, out, errOut)
	}
}

// TestReloadNoBroker: with no broker running, reload exits 1 at once, naming what it tried.
func TestReloadNoBroker(t *testing.T) {
	e := newE2E(t)
	e.writeConfig("", "alpha")
	_, errOut, code := runCLI(t, nil, "reload", "-c", e.cfg)
	if code != 1 || !strings.Contains(errOut, "is the broker running?") || !strings.Contains(errOut, e.sock("alpha")) {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
}

func TestRunConfigArg(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" = not a broker run
	}{
		{[]string{"-c", "b.toml"}, "b.toml"},
		{[]string{"-c=b.toml"}, "b.toml"},
		{[]string{"--config", "/etc/b.toml", "--log-level", "debug"}, "/etc/b.toml"},
		{[]string{"run", "--log-level", "debug", "-c", "b.toml"}, "b.toml"},
		{[]string{"reload", "-c", "b.toml"}, ""},
		{[]string{"admin", "status", "-c", "b.toml"}, ""},
		{[]string{"run", "--", "-c", "b.toml"}, ""},
		{[]string{"-test.v"}, ""},
		{nil, ""},
	} {
		got, ok := runConfigArg(tc.args)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("runConfigArg(%q) = %q, %v; want %q", tc.args, got, ok, tc.want)
		}
	}
}
