package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOverCapAgainstBuiltBroker builds the broker and runs the over-cap fault against it:
// one line in the documented format, every one of the 100 clients accounted for.
func TestOverCapAgainstBuiltBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the broker")
	}
	bin := filepath.Join(t.TempDir(), "broker")
	build := exec.Command("go", "build", "-o", bin, "github.com/rpbroker/broker/cmd/broker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/broker: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"-broker", bin, "-only", "over-cap"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
	}
	line := strings.TrimSpace(stdout.String())
	m := regexp.MustCompile(`^fault over-cap +refusal_frames=(\d+) clients=100 outcomes=(\S+)$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("output %q does not match the documented line", line)
	}
	total := 0
	for kv := range strings.SplitSeq(m[2], ",") {
		_, n, _ := strings.Cut(kv, ":")
		v, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("outcome %q in %q: %v", kv, line, err)
		}
		total += v
	}
	if total != overCapClients {
		t.Errorf("outcomes account for %d clients, want %d: %q", total, overCapClients, line)
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
