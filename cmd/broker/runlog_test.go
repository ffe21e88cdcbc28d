package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// logRecords decodes a JSON log; a line that is not JSON fails the test.
func logRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// refusedNotRegistered checks a Hello to a registered service whose backend is down.
func refusedNotRegistered(t *testing.T, socket, service string) {
	t.Helper()
	var ref *client.RefusedError
	if err := hello(socket, service); !errors.As(err, &ref) || ref.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
		t.Fatalf("Hello to %s: %v, want BACKEND_SPAWN_FAILED", service, err)
	}
}

// stopBroker sends SIGTERM and checks a clean exit with every socket removed.
func stopBroker(t *testing.T, cmd *exec.Cmd, out *testutil.SyncBuffer, sockets ...string) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM (%v); output:\n%s", code, cmd.ProcessState, out)
	}
	for _, s := range sockets {
		if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after shutdown", s)
		}
	}
}

var (
	jsonTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`)
	textLine = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} (TRC|DBG|INF|WRN|ERR) `)
	unitDur  = regexp.MustCompile(`^-?[0-9.hmµns]+s$`)
)

// TestRunLogOutput runs the broker binary with its log going into a pipe: millisecond
// timestamps in both formats, no colour codes in text, a registered backend appearing
// and a refused Hello at info (the default level), durations with their unit.
func TestRunLogOutput(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			e := newE2E(t)
			e.writeConfig("", "alpha")
			// NO_COLOR empty counts as unset: only the pipe keeps colour off.
			cmd, out := startProcess(t, []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=" + format, "NO_COLOR="}, "-c", e.cfg)
			testutil.WaitFor(t, "alpha's socket", func() bool { return dialable(e.sock("alpha")) })
			refusedNotRegistered(t, e.sock("alpha"), "alpha")
			e.startBackend()
			testutil.WaitFor(t, "the backend to be verified", func() bool { return hello(e.sock("alpha"), "alpha") == nil })
			stopBroker(t, cmd, out, e.sock("alpha"))

			log := out.String()
			if format == "text" {
				if strings.Contains(log, "\x1b[") {
					t.Fatalf("colour codes in text written to a pipe:\n%q", log)
				}
				for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
					if !textLine.MatchString(l) {
						t.Errorf("text line without a millisecond timestamp and level: %q", l)
					}
				}
				for _, want := range []string{"INF refused", "event=hello_refused", "INF registered backend verified", "event=backend_up"} {
					if !strings.Contains(log, want) {
						t.Errorf("no %q in the text log:\n%s", want, log)
					}
				}
				return
			}
			seen := map[string]bool{}
			for _, m := range logRecords(t, log) {
				if s, _ := m["time"].(string); !jsonTime.MatchString(s) {
					t.Errorf("time %q is not RFC 3339 with milliseconds: %v", m["time"], m)
				}
				switch ev, _ := m["event"].(string); ev {
				case "hello_refused", "backend_up":
					seen[ev] = true
					if m["level"] != "info" {
						t.Errorf("%s at %v, want info: %v", ev, m["level"], m)
					}
				}
				for _, k := range []string{"took", "grace", "retry_in"} {
					if v, ok := m[k]; ok {
						if s, _ := v.(string); !unitDur.MatchString(s) {
							t.Errorf("%s=%v has no unit: %v", k, v, m)
						}
					}
				}
			}
			if !seen["hello_refused"] || !seen["backend_up"] {
				t.Fatalf("refusal logged %v, backend_up logged %v at the default level; log:\n%s", seen["hello_refused"], seen["backend_up"], log)
			}
		})
	}
}

// TestRunSurvivesClosedLogPipe: `broker -c FILE 2>&1 | head -1`. Once head has exited,
// every log line meets a broken pipe; the broker keeps serving (a refused Hello logs a
// line, the next one is still answered) and exits 0 on SIGTERM, its sockets removed.
// Before, the first such line killed it with SIGPIPE (exit 141 from a shell), sockets
// left behind.
func TestRunSurvivesClosedLogPipe(t *testing.T) {
	e := newE2E(t)
	e.writeConfig("", "alpha")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	head := exec.Command("head", "-1")
	head.Stdin = r
	var headOut strings.Builder
	head.Stdout = &headOut
	if err := head.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close() // head holds the only read end
	broker := exec.Command(os.Args[0], "-c", e.cfg)
	broker.Env = append(os.Environ(), envRunBroker+"=1", "RP_BROKER_LOG_FORMAT=json")
	broker.Stdout, broker.Stderr = w, w
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { broker.Process.Kill(); broker.Wait() })
	if err := head.Wait(); err != nil {
		t.Fatalf("head: %v", err)
	}
	if !strings.Contains(headOut.String(), "broker_pid") {
		t.Fatalf("head read %q, want the broker's first log line", headOut.String())
	}
	// The reader is gone: the first refusal's log line meets the broken pipe (the first
	// line of a reason is never sampled away); the next Hellos must still be answered.
	testutil.WaitFor(t, "alpha's socket", func() bool { return dialable(e.sock("alpha")) })
	for range 3 {
		refusedNotRegistered(t, e.sock("alpha"), "alpha")
	}
	stopBroker(t, broker, &testutil.SyncBuffer{}, e.sock("alpha"))
}

// TestRunLogLevelFlag: --log-level beats BROKER_LOG_LEVEL, which beats the file, and a
// reload that changes the file's log_level keeps the flag's; a bad value is a usage error.
func TestRunLogLevelFlag(t *testing.T) {
	t.Run("bad value", func(t *testing.T) {
		e := newE2E(t)
		e.writeConfig("", "alpha")
		cmd, out := startProcess(t, []string{envRunBroker + "=1"}, "-c", e.cfg, "--log-level", "loud")
		if code, _ := waitExit(t, cmd, 10*time.Second); code != exitUsage || !strings.Contains(out.String(), `--log-level "loud"`) {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
	for _, tc := range []struct {
		name     string
		args     []string
		wantInfo bool
	}{
		{name: "env and file say error", wantInfo: false},
		{name: "flag says info", args: []string{"--log-level", "info"}, wantInfo: true},
		{name: "flag says debug", args: []string{"--log-level=debug"}, wantInfo: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newE2E(t)
			e.writeConfig(`log_level = "error"`, "alpha")
			env := []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=json", "BROKER_LOG_LEVEL=error"}
			cmd, out := startProcess(t, env, append([]string{"-c", e.cfg}, tc.args...)...)
			testutil.WaitFor(t, "alpha's socket", func() bool { return dialable(e.sock("alpha")) })
			// The file now asks for warn: the flag, when given, still wins after the reload.
			e.writeConfig(`log_level = "warn"`, "alpha")
			cmd.Process.Signal(syscall.SIGHUP)
			if tc.wantInfo {
				testutil.WaitFor(t, "the reload to be logged", func() bool { return strings.Contains(out.String(), "config_reload") })
			}
			refusedNotRegistered(t, e.sock("alpha"), "alpha")
			stopBroker(t, cmd, out, e.sock("alpha"))
			levels := map[string]int{}
			for _, m := range logRecords(t, out.String()) {
				levels[m["level"].(string)]++
				if m["event"] == "config_reload" && m["message"] == "logger swapped" {
					t.Errorf("the reload swapped the logger although the level in force did not change: %v", m)
				}
			}
			if got := levels["info"] > 0; got != tc.wantInfo {
				t.Fatalf("info lines logged: %v, want %v; levels %v; log:\n%s", got, tc.wantInfo, levels, out)
			}
			if got, want := levels["debug"] > 0, tc.name == "flag says debug"; got != want {
				t.Fatalf("debug lines logged: %v, want %v; levels %v", got, want, levels)
			}
		})
	}
}
