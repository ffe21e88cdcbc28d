package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

// brokerCLI runs the built command (the test binary in its broker role) with args and
// returns its exit code, stdout and stderr.
func brokerCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunBroker+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("broker %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// statusOf asks `broker status --json` through socket.
func statusOf(t *testing.T, socket string) admin.StatusReply {
	t.Helper()
	code, out, errOut := brokerCLI(t, "status", "--json", "--socket", socket)
	var st admin.StatusReply
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	return st
}

// refusedBackend reports whether err is the refusal of a Hello whose backend is down.
func refusedBackend(err error) bool {
	var ref *client.RefusedError
	return errors.As(err, &ref) && ref.Code == wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED
}

func service(st admin.StatusReply, name string) admin.ServiceStatus {
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	return admin.ServiceStatus{}
}

// `broker status` shows every service of the broker through any one of its sockets:
// state, connections, Hellos and refusals since start, and the live backends.
func TestStatusCommand(t *testing.T) {
	e := newE2E(t)
	e.writeConfig("", "alpha", "beta")
	e.startBroker()
	// The backend starts after the broker: its probe failures are BACKEND_HEALTH's last_error.
	testutil.WaitFor(t, "alpha to refuse with no backend", func() bool { return refusedBackend(hello(e.sock("alpha"), "alpha")) })
	e.startBackend()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	if err := hello(e.sock("alpha"), "alpha"); err != nil {
		t.Fatal(err)
	}

	// Asked through beta's socket, alpha's counts are there too. A Hello is counted once
	// answered, which its client may see first.
	var st admin.StatusReply
	testutil.WaitFor(t, "alpha's Hellos to be counted", func() bool {
		st = statusOf(t, e.sock("beta"))
		return service(st, "alpha").Hellos-service(st, "alpha").Refusals == 2
	})
	alpha, beta := service(st, "alpha"), service(st, "beta")
	if alpha.State != admin.StateServing || alpha.Socket != e.sock("alpha") || alpha.Mode != "registered" ||
		alpha.Hellos < 3 || alpha.Refusals < 1 || alpha.Hellos-alpha.Refusals != 2 {
		t.Errorf("alpha: %+v", alpha)
	}
	if len(alpha.Backends) != 1 || alpha.Backends[0].PID == 0 || alpha.Backends[0].State != "running" {
		t.Errorf("alpha backends: %+v", alpha.Backends)
	}
	if beta.State != admin.StateServing || beta.Hellos != 0 || beta.ConnectionsOpen != 1 { // this request
		t.Errorf("beta: %+v", beta)
	}

	code, out, errOut := brokerCLI(t, "status", "-c", e.cfg)
	for _, want := range []string{"SERVICE", "alpha", "beta", "serving", e.sock("alpha"), "BACKEND", e.backend(), "running"} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || errOut != "" {
		t.Errorf("status: exit %d, stderr %q", code, errOut)
	}

	// The probe error from before the backend came up is its last_error.
	code, out, _ = brokerCLI(t, "admin", "backend-health", "--json", "-c", e.cfg, "--service", "alpha")
	var bh admin.BackendHealthReply
	if err := json.Unmarshal([]byte(out), &bh); code != 0 || err != nil || len(bh.Backends) != 1 ||
		bh.Backends[0].State != "running" || bh.Backends[0].LastError == "" {
		t.Errorf("backend-health: exit %d %v %+v\n%s", code, err, bh, out)
	}
}

// Every admin verb against a socket that is not a broker's, or a missing service, exits 1
// with an error that says so.
func TestAdminNotABroker(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	dead := filepath.Join(e.dir, "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays, nothing listens: what a broker killed by SIGKILL leaves
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", e.backend()}, "is not a broker control socket: it sent the request back"},
		{[]string{"--socket", dead}, "nothing listens on the socket"},
		{[]string{"--socket", filepath.Join(e.dir, "none.sock")}, "the socket does not exist"},
		{[]string{"-c", e.cfg, "--service", "nope"}, `--service "nope": ` + e.cfg + ` has no [[service]] of that name (it has: alpha)`},
	} {
		for _, verb := range strings.Split(adminVerbs, ", ") {
			args := append([]string{"admin", verb, "--timeout", "2s"}, tc.args...)
			code, out, errOut := brokerCLI(t, args...)
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, out, errOut, tc.want)
			}
		}
	}
	code, _, errOut := brokerCLI(t, "status", "--socket", e.backend(), "--timeout", "2s")
	if code != 1 || !strings.Contains(errOut, "is not a broker control socket") {
		t.Errorf("status on a backend: exit %d %q", code, errOut)
	}
}

// --json means JSON on every verb; without it, every verb prints a human form.
func TestAdminJSONOnEveryVerb(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	cmd, _ := e.startBroker()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	human := map[string]string{
		"status": "broker_instance: private:alpha", "dump": "spawn budgets:", "list-instances": "INSTANCE",
		"healthz": "ok", "readyz": "ready", "backend-health": "LAST ERROR", "config": "broker.log_level",
		"diagnose": "bundle not written", "metrics": "# EOF", "shutdown": "broker shutting down",
	}
	for _, verb := range strings.Split(adminVerbs, ", ") {
		if verb == "shutdown" {
			continue // last, below
		}
		code, out, errOut := brokerCLI(t, "admin", verb, "--json", "--socket", e.sock("alpha"))
		var doc map[string]any
		if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc["schema_version"] != 1.0 {
			t.Errorf("%s --json: exit %d %v %q\n%s", verb, code, err, errOut, out)
		}
		code, out, errOut = brokerCLI(t, "admin", verb, "--socket", e.sock("alpha"))
		if code != 0 || json.Valid([]byte(out)) || !strings.Contains(out, human[verb]) {
			t.Errorf("%s: exit %d %q, want a human form with %q:\n%s", verb, code, errOut, human[verb], out)
		}
	}
	code, out, _ := brokerCLI(t, "admin", "shutdown", "--json", "--socket", e.sock("alpha"))
	var tr admin.TextReply
	if err := json.Unmarshal([]byte(out), &tr); code != 0 || err != nil || tr.Body != human["shutdown"]+"\n" || tr.Command != "shutdown" {
		t.Errorf("shutdown --json: exit %d %v %q", code, err, out)
	}
	if code, _ := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("broker exit %d after admin shutdown", code)
	}
}

// `broker events` prints the event log one line per event (or one JSON object per line),
// and -f follows it.
func TestEventsCommand(t *testing.T) {
	e := newE2E(t)
	e.writeConfig("", "alpha")
	e.startBroker()
	testutil.WaitFor(t, "a refusal with no backend", func() bool { return refusedBackend(hello(e.sock("alpha"), "alpha")) })
	testutil.WaitFor(t, "the refusal in the event log", func() bool {
		_, out, _ := brokerCLI(t, "events", "-c", e.cfg)
		return strings.Contains(out, "HELLO_REFUSED service=alpha version=1.0.0")
	})
	code, out, _ := brokerCLI(t, "events", "--json", "-c", e.cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ev admin.LifecycleEvent
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); code != 0 || err != nil || ev.Kind != "HELLO_REFUSED" || ev.ServiceName != "alpha" {
		t.Fatalf("events --json: exit %d %v %+v\n%s", code, err, ev, out)
	}

	f, buf := startProcess(t, []string{envRunBroker + "=1"}, "events", "-f", "-c", e.cfg)
	testutil.WaitFor(t, "-f to print the log so far", func() bool { return strings.Contains(buf.String(), "HELLO_REFUSED") })
	before := strings.Count(buf.String(), "HELLO_REFUSED")
	if !refusedBackend(hello(e.sock("alpha"), "alpha")) {
		t.Fatal("want a refusal")
	}
	testutil.WaitFor(t, "-f to print the new refusal", func() bool { return strings.Count(buf.String(), "HELLO_REFUSED") > before })
	f.Process.Signal(syscall.SIGINT)
	if code, _ := waitExit(t, f, 10*time.Second); code != 0 {
		t.Fatalf("events -f exit %d after SIGINT:\n%s", code, buf.String())
	}
	if code, _, errOut := brokerCLI(t, "events", "--log", filepath.Join(e.dir, "none.log")); code != 1 || !strings.Contains(errOut, "no event log at") {
		t.Errorf("missing log: exit %d %q", code, errOut)
	}
}
