package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// keysBroker is a broker process run from a file whose [broker] keys a test edits.
type keysBroker struct {
	*e2e
	keys map[string]string // [broker] key → TOML value
	out  *testutil.SyncBuffer
	cmd  *exec.Cmd
}

func (k *keysBroker) write() {
	k.t.Helper()
	var b strings.Builder
	b.WriteString("[broker]\n")
	for _, key := range slices.Sorted(maps.Keys(k.keys)) {
		fmt.Fprintf(&b, "%s = %s\n", key, k.keys[key])
	}
	fmt.Fprintf(&b, "\n[[service]]\nname = \"alpha\"\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n",
		k.backend(), k.sock("alpha"))
	tmp := k.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, k.cfg); err != nil {
		k.t.Fatal(err)
	}
}

// startKeysBroker runs a broker whose alpha service negotiates with a live echo backend.
func startKeysBroker(t *testing.T, keys map[string]string, env ...string) *keysBroker {
	t.Helper()
	e := newE2E(t)
	e.startBackend()
	k := &keysBroker{e2e: e, keys: map[string]string{
		"servicedef_dir":   fmt.Sprintf("%q", filepath.Join(e.dir, "defs")),
		"runtime_dir":      fmt.Sprintf("%q", e.dir),
		"hello_rate_limit": "0",
	}}
	maps.Copy(k.keys, keys)
	k.write()
	cmd, out := startProcess(t, append([]string{envRunBroker + "=1"}, env...), "-c", e.cfg)
	k.out, k.cmd = out, cmd
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
	return k
}

// reload rewrites the file with key=value and runs `broker reload`; it returns what the
// command printed (the plan) and the broker's log written since.
func (k *keysBroker) reload(key, value string) (plan string, logSince func() string) {
	k.t.Helper()
	k.keys[key] = value
	k.write()
	mark := len(k.out.String())
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code := runReload(ctx, []string{"-c", k.cfg}, &stdout, &stderr); code != exitOK {
		k.t.Fatalf("broker reload: exit %d: %s", code, stderr.String())
	}
	return stdout.String(), func() string { return k.out.String()[mark:] }
}

// logged waits until the broker's log since the reload holds want (stderr is a pipe: a
// line may arrive after the reload reported done) and returns that log.
func logged(t *testing.T, logSince func() string, want string) string {
	t.Helper()
	testutil.WaitFor(t, "the log to show "+want, func() bool { return strings.Contains(logSince(), want) })
	return logSince()
}

// refusal says Hello with the refusal code, or "negotiated".
func refusal(err error) string {
	var r *client.RefusedError
	switch {
	case err == nil:
		return "negotiated"
	case errors.As(err, &r):
		return r.Code.String()
	}
	return err.Error()
}

// silentConn dials alpha and says nothing; done reports when the broker hangs up.
func silentConn(t *testing.T, socket string) (since time.Time, done <-chan struct{}) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		io.Copy(io.Discard, c) // returns when the broker closes its end (or the test does)
	}()
	return time.Now(), ch
}

func jsonLines(log string) (jsonN, textN int) {
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if json.Valid([]byte(l)) {
			jsonN++
		} else if l != "" {
			textN++
		}
	}
	return
}

// TestReloadBrokerKeys: one case per [broker] key. A key that applies live changes the
// running broker's behaviour for the next connection; a key that needs a restart says so
// in the `broker reload` output and in the log.
func TestReloadBrokerKeys(t *testing.T) {
	for _, tc := range []struct {
		key, from, to string
		env           []string
		plan          string // expected line of `broker reload`; "" = the key does not change
		check         func(t *testing.T, k *keysBroker, logSince func() string)
	}{
		{key: "log_level", from: `"info"`, to: `"debug"`, env: []string{"RP_BROKER_LOG_FORMAT=json"},
			plan: "broker: log_level info → debug (applied live)",
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				testutil.WaitFor(t, "a debug line for a Hello", func() bool {
					return hello(k.sock("alpha"), "alpha") == nil && strings.Contains(logSince(), `"level":"debug"`)
				})
			}},
		{key: "log_level", from: `"info"`, to: `"debug"`, env: []string{"RP_BROKER_LOG_FORMAT=json", "BROKER_LOG_LEVEL=info"},
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				for range 3 {
					if err := hello(k.sock("alpha"), "alpha"); err != nil {
						t.Fatal(err)
					}
				}
				// A second reload's lines follow the Hellos' in the log.
				_, since := k.reload("log_level", `"debug"`)
				logged(t, since, "unchanged alpha")
				if strings.Contains(logSince(), `"level":"debug"`) {
					t.Errorf("BROKER_LOG_LEVEL=info lost on reload: %s", logSince())
				}
			}},
		{key: "log_format", from: `"json"`, to: `"text"`, env: []string{"RP_BROKER_LOG_FORMAT="},
			plan: "broker: log_format json → text (applied live)",
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				// From the first line written after the swap on.
				_, after, _ := strings.Cut(logged(t, logSince, "unchanged alpha"), `"message":"reloading config"}`)
				if j, txt := jsonLines(after); j != 0 || txt == 0 {
					t.Errorf("after the switch to text: %d JSON lines, %d text lines:\n%s", j, txt, logSince())
				}
			}},
		{key: "log_format", from: `"json"`, to: `"text"`, env: []string{"RP_BROKER_LOG_FORMAT=json"},
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				if j, txt := jsonLines(logged(t, logSince, "unchanged alpha")); j == 0 || txt != 0 {
					t.Errorf("RP_BROKER_LOG_FORMAT=json lost on reload: %d JSON, %d text:\n%s", j, txt, logSince())
				}
			}},
		{key: "hello_timeout", from: `"30s"`, to: `"300ms"`,
			plan: "broker: hello_timeout 30s → 300ms (applied live)",
			check: func(t *testing.T, k *keysBroker, _ func() string) {
				since, done := silentConn(t, k.sock("alpha"))
				select {
				case <-done:
					if took := time.Since(since); took > 5*time.Second {
						t.Errorf("silent connection closed after %s, want about 300ms", took)
					}
				case <-time.After(10 * time.Second):
					t.Error("silent connection still open after 10s: the new hello_timeout did not apply")
				}
			}},
		{key: "hello_rate_limit", from: `0`, to: `1`,
			plan: "broker: hello_rate_limit 0 → 1 (applied live)",
			check: func(t *testing.T, k *keysBroker, _ func() string) {
				var got []string
				for range 3 {
					got = append(got, refusal(hello(k.sock("alpha"), "alpha")))
				}
				if !slices.Contains(got, "ERROR_RATE_LIMITED") {
					t.Errorf("3 Hellos within a second at 1/s: %v, want a RATE_LIMITED", got)
				}
			}},
		{key: "shutdown_grace", from: `"30s"`, to: `"1s"`,
			plan: "broker: shutdown_grace 30s → 1s (applied live)",
			check: func(t *testing.T, k *keysBroker, _ func() string) {
				// A silent client holds its serve loop (hello_timeout is long): the drain
				// gives up after shutdown_grace, the reloaded one.
				silentConn(t, k.sock("alpha"))
				if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				// Fails (after 10s) when the drain waits out the start-up grace (30s).
				_, took := waitExit(t, k.cmd, 10*time.Second)
				t.Logf("exited %s after SIGTERM", took.Round(10*time.Millisecond))
			}},
		{key: "servicedef_dir", from: "", to: "defs2",
			plan: "applied live",
			check: func(t *testing.T, k *keysBroker, _ func() string) {
				testutil.WaitFor(t, "the new dir's min_version to apply", func() bool {
					return refusal(hello(k.sock("alpha"), "alpha")) == "ERROR_VERSION_BLOCKED"
				})
			}},
		{key: "runtime_dir", from: "", to: "run2",
			plan: "needs restart; the running broker keeps",
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				logged(t, logSince, "broker: runtime_dir ")
				logged(t, logSince, "needs restart")
				if err := hello(k.sock("alpha"), "alpha"); err != nil {
					t.Error(err)
				}
			}},
		{key: "event_log", from: "", to: "ev2.log",
			plan: "needs restart; the running broker keeps",
			check: func(t *testing.T, k *keysBroker, logSince func() string) {
				logged(t, logSince, "broker: event_log ")
				logged(t, logSince, "needs restart")
				refusal(hello(k.sock("alpha"), "nope")) // an event worth writing
				if _, err := os.Stat(filepath.Join(k.dir, "ev2.log")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("new event log opened without a restart: %v", err)
				}
			}},
	} {
		name := tc.key
		if len(tc.env) > 0 {
			name += " " + strings.Join(tc.env, " ")
		}
		t.Run(name, func(t *testing.T) {
			keys := map[string]string{"hello_timeout": `"30s"`, "shutdown_grace": `"5s"`}
			if tc.from != "" {
				keys[tc.key] = tc.from
			}
			k := startKeysBroker(t, keys, tc.env...)
			to := tc.to
			switch tc.key {
			case "servicedef_dir", "runtime_dir", "event_log":
				dir := filepath.Join(k.dir, tc.to)
				to = fmt.Sprintf("%q", dir)
				if tc.key == "servicedef_dir" {
					if err := os.Mkdir(dir, 0o700); err != nil {
						t.Fatal(err)
					}
					writeDef(t, dir, "alpha.servicedef", &wirepb.ServiceDefinition{ServiceName: "alpha", BinaryPath: "/usr/bin/alpha", MinVersion: "2.0.0"})
				}
			}
			plan, logSince := k.reload(tc.key, to)
			switch {
			case tc.plan == "" && strings.Contains(plan, "broker: "+tc.key):
				t.Errorf("reload planned a change of %s pinned by the environment:\n%s", tc.key, plan)
			case tc.plan != "" && !strings.Contains(plan, tc.plan):
				t.Errorf("broker reload printed\n%s\nwant a line with %q", plan, tc.plan)
			case tc.plan != "" && !strings.Contains(plan, "broker: "+tc.key):
				t.Errorf("broker reload printed no line for %s:\n%s", tc.key, plan)
			}
			tc.check(t, k, logSince)
		})
	}
}
