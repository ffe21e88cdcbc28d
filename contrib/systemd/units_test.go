// Package systemd holds the broker's systemd units; this test checks them with
// systemd-analyze verify against a broker binary built from this tree.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const installedBinary = "%h/.local/bin/broker"

// TestUnitsVerify runs `systemd-analyze --user verify` on copies of the units whose
// ExecStart/ExecReload name a broker built from this tree. Any line it prints is a
// failure: systemd ignores an unknown key or a bad value with a warning and still exits 0.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing in CI: .ci/run installs the systemd package")
		}
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	broker := filepath.Join(dir, "broker")
	if out, err := exec.Command("go", "build", "-o", broker, "github.com/rpbroker/broker/cmd/broker").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var units []string
	for _, name := range []string{"broker.service", "broker.socket"} {
		body, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(body), installedBinary, broker)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
	}
	// A user manager's specifiers (%t) need XDG_RUNTIME_DIR, which CI has not.
	runtime := filepath.Join(dir, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, append([]string{"--user", "verify"}, units...)...)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestServiceUnitSettings pins what the service promises: readiness and reload through
// sd_notify, the watchdog, restart on failure and the hardening the README documents.
func TestServiceUnitSettings(t *testing.T) {
	body, err := os.ReadFile("broker.service")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(body), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=notify",
		"ExecStart=" + installedBinary + " run -c %E/broker/broker.toml",
		"ExecReload=" + installedBinary + " reload -c %E/broker/broker.toml",
		"Restart=on-failure",
		"WatchdogSec=30s",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=read-only",
		"ReadWritePaths=-%t/running-process",
		"PrivateTmp=yes",
		"RestrictAddressFamilies=AF_UNIX",
		"SystemCallFilter=@system-service",
		"LockPersonality=yes",
		"MemoryDenyWriteExecute=yes",
		"RuntimeDirectory=running-process/broker",
		"RuntimeDirectoryPreserve=yes",
		"ConfigurationDirectory=broker",
	} {
		if !lines[want] {
			t.Errorf("broker.service lacks %q", want)
		}
	}
}
