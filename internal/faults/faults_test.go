package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire/wirepb"
)

// TestMain lets the test binary serve as our launched backend, as the program does: the
// faults copy their own executable into the binary dir.
func TestMain(m *testing.M) {
	if role, ok := backendRole(); ok {
		os.Exit(serveBackend(role))
	}
	os.Exit(m.Run())
}

// TestFaultsAgainstBuiltBroker builds the broker and runs the two cheap faults against
// it: one line each in the documented format. over-cap accounts for every one of its 100
// clients; crash-loop proves the launched backend (this binary, copied) started, was used
// and crashed as designed.
func TestFaultsAgainstBuiltBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the broker")
	}
	bin := filepath.Join(t.TempDir(), "broker")
	build := exec.Command("go", "build", "-o", bin, "github.com/rpbroker/broker/cmd/broker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/broker: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		fault string
		line  string // the figures, with the outcomes tally as the last group
		check func(t *testing.T, m []string, got map[string]int)
	}{
		{"over-cap", `refusal_frames=(\d+) clients=100 outcomes=(\S+)`, func(t *testing.T, m []string, got map[string]int) {
			if total := sum(got); total != overCapClients {
				t.Errorf("outcomes account for %d clients, want %d", total, overCapClients)
			}
		}},
		{"crash-loop", `respawns_before_refusal=(\d+) starts=(\d+) first_refusal=(RATE_LIMITED|none) hellos=(\d+) elapsed_s=[0-9.]+ outcomes=(\S+)`,
			func(t *testing.T, m []string, got map[string]int) {
				if got["negotiated"] == 0 || m[2] == "0" {
					t.Errorf("no backend started")
				}
				// A Hello may still be routed to a backend that just died (the broker's
				// own race); most uses must find a backend that crashes on use.
				if got["use-error"] >= got["negotiated"] {
					t.Errorf("the launched backend did not crash on use as designed")
				}
			}},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			if code := run(ctx, []string{"-broker", bin, "-only", tc.fault}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
			}
			line := strings.TrimSpace(stdout.String())
			m := regexp.MustCompile(`^fault ` + tc.fault + ` +` + tc.line + `$`).FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("output %q does not match the documented line", line)
			}
			got := map[string]int{}
			for kv := range strings.SplitSeq(m[len(m)-1], ",") {
				k, n, _ := strings.Cut(kv, ":")
				v, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("outcome %q in %q: %v", kv, line, err)
				}
				got[k] = v
			}
			tc.check(t, m, got)
			if t.Failed() {
				t.Logf("line: %s", line)
			}
		})
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestOutcomeNames: refusals are tallied by the code's name as the issue writes it, and
// the tally renders in key order.
func TestOutcomeNames(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "negotiated"},
		{&client.RefusedError{Code: wirepb.ErrorCode_ERROR_RATE_LIMITED}, "RATE_LIMITED"},
		{&client.RefusedError{Code: wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN}, "SERVICE_UNKNOWN"},
		{errors.New("read reply: EOF"), "error"},
	} {
		if got := outcome(tc.err); got != tc.want {
			t.Errorf("outcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if got := counts(map[string]int{"b": 2, "a": 1}); got != "a:1,b:2" {
		t.Errorf("counts = %q", got)
	}
	if got := counts(nil); got != "none" {
		t.Errorf("counts(nil) = %q", got)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no broker", nil, "usage: faults -broker PATH"},
		{"broker missing", []string{"-broker", filepath.Join(t.TempDir(), "nope")}, "no such file"},
		{"broker not executable", []string{"-broker", t.TempDir()}, "not an executable file"},
		{"unknown fault", []string{"-broker", "/bin/true", "-only", "nope"}, `unknown fault "nope"`},
		{"stray argument", []string{"-broker", "/bin/true", "extra"}, "usage: faults -broker PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, &stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not say %q", &stderr, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", &stdout)
			}
		})
	}
}
