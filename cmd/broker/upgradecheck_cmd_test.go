package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// TestUpgradeCheck runs the pre-check of the built broker (this test binary in its
// broker role), as a running broker runs it against a new binary.
func TestUpgradeCheck(t *testing.T) {
	dir := testutil.ShortDir(t)
	cfg := filepath.Join(dir, "broker.toml")
	writeCheckFile(t, cfg, "[broker]\nruntime_dir = \""+dir+"\"\nservicedef_dir = \""+dir+"\"\n\n"+
		"[[service]]\nname = \"*\"\nmode = \"launch\"\n")
	badCfg := filepath.Join(dir, "bad.toml")
	writeCheckFile(t, badCfg, "[broker]\nhello_timeout = \"soon\"\n")

	good, err := upgrade.Encode(&statepb.State{Generation: 2, ConfigPath: cfg})
	if err != nil {
		t.Fatal(err)
	}
	// The envelope starts with 8 bytes of magic and the format version (big endian).
	newer := bytes.Clone(good)
	binary.BigEndian.PutUint32(newer[8:], upgrade.FormatVersion+1)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-1] ^= 1
	state := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeCheckFile(t, p, string(b))
		return p
	}
	goodPath := state("good", good)

	for _, tc := range []struct {
		name   string
		args   []string
		fd     []byte // handed as --state-fd 3 when set
		code   int
		stdout []string // regexps, each must match
		stderr string
	}{
		{name: "state file", args: []string{"-c", cfg, "--state", goodPath}, code: 0,
			stdout: []string{`(?m)^version \S+$`, `(?m)^build [0-9a-f]{16}$`, `(?m)^state format v1 \(this binary reads up to v1\)$`, `(?m)^config .*broker\.toml ok \(1 services\)$`}},
		{name: "state memfd", args: []string{"-c", cfg, "--state-fd", "3"}, fd: good, code: 0,
			stdout: []string{`(?m)^state format v1 `}},
		{name: "newer format", args: []string{"-c", cfg, "--state", state("newer", newer)}, code: 1,
			stderr: "state format is newer than this broker understands: the state is format v2, this broker reads up to v1"},
		{name: "corrupt state", args: []string{"-c", cfg, "--state", state("corrupt", corrupt)}, code: 1, stderr: "state is corrupt: checksum mismatch"},
		{name: "not a state", args: []string{"-c", cfg, "--state", cfg}, code: 1, stderr: "state is corrupt"},
		{name: "invalid config", args: []string{"-c", badCfg, "--state", goodPath}, code: 1, stderr: "config:"},
		{name: "no state", args: []string{"-c", cfg}, code: 2, stderr: "want -c FILE and one of --state, --state-fd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], append([]string{upgradeCheckCommand}, tc.args...)...)
			cmd.Env = append(os.Environ(), envRunBroker+"=1")
			if tc.fd != nil {
				f, err := upgrade.WriteMemfd(tc.fd)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = []*os.File{f}
			}
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, o.String(), e.String())
			}
			for _, re := range tc.stdout {
				if !regexp.MustCompile(re).MatchString(o.String()) {
					t.Errorf("stdout does not match %s:\n%s", re, o.String())
				}
			}
			if !strings.Contains(e.String(), tc.stderr) || (tc.stderr == "" && e.Len() > 0) {
				t.Errorf("stderr = %q, want it to contain %q", e.String(), tc.stderr)
			}
		})
	}
}

func writeCheckFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
