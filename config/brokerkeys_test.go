package config

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestBrokerKeyPlanLines: every [broker] key, changed alone in the file, yields one plan
// line that says whether the running broker applies it live or needs a restart.
func TestBrokerKeyPlanLines(t *testing.T) {
	dir := t.TempDir()
	base := map[string]string{
		"servicedef_dir":   `"` + dir + `/defs"`,
		"runtime_dir":      `"` + dir + `/run"`,
		"log_format":       `"json"`,
		"log_level":        `"info"`,
		"hello_timeout":    `"30s"`,
		"hello_rate_limit": `256`,
		"shutdown_grace":   `"10s"`,
		"event_log":        `"` + dir + `/events.log"`,
	}
	for _, tc := range []struct {
		key, value, line string
	}{
		{"servicedef_dir", `"` + dir + `/defs2"`, "broker: servicedef_dir " + dir + "/defs → " + dir + "/defs2 (applied live)"},
		{"runtime_dir", `"` + dir + `/run2"`, "broker: runtime_dir " + dir + "/run → " + dir + "/run2 (needs restart; the running broker keeps " + dir + "/run)"},
		{"log_format", `"text"`, "broker: log_format json → text (applied live)"},
		{"log_level", `"debug"`, "broker: log_level info → debug (applied live)"},
		{"hello_timeout", `"2s"`, "broker: hello_timeout 30s → 2s (applied live)"},
		{"hello_rate_limit", `0`, "broker: hello_rate_limit 256 → 0 (applied live)"},
		{"shutdown_grace", `"1s"`, "broker: shutdown_grace 10s → 1s (applied live)"},
		{"event_log", `"` + dir + `/ev2.log"`, "broker: event_log " + dir + "/events.log → " + dir + "/ev2.log (needs restart; the running broker keeps " + dir + "/events.log)"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			old := loadBroker(t, dir, base)
			edited := maps.Clone(base)
			edited[tc.key] = tc.value
			p := Diff(old, loadBroker(t, dir, edited))
			want := []string{tc.line, "unchanged *"}
			if got := p.Lines(); !slices.Equal(got, want) {
				t.Errorf("lines\n got %q\nwant %q", got, want)
			}
			restart := strings.Contains(tc.line, "needs restart")
			if len(p.Broker) != 1 || p.Broker[0].NeedsRestart != restart {
				t.Errorf("broker changes %+v, want one with NeedsRestart=%v", p.Broker, restart)
			}
		})
	}
	if n := reflect.TypeFor[Broker]().NumField(); n != len(base) {
		t.Errorf("Broker has %d fields, this table covers %d", n, len(base))
	}
}

// TestBrokerEnvOverridesSurviveReload: a key pinned by the environment stays pinned when
// the file changes it, so a reload plans no change for it.
func TestBrokerEnvOverridesSurviveReload(t *testing.T) {
	dir := t.TempDir()
	base := map[string]string{"log_format": `"json"`, "log_level": `"info"`, "hello_timeout": `"30s"`}
	edited := map[string]string{"log_format": `"text"`, "log_level": `"debug"`, "hello_timeout": `"1s"`}
	env := []string{"RP_BROKER_LOG_FORMAT=json", "BROKER_LOG_LEVEL=warn", "BROKER_HELLO_TIMEOUT=5s"}
	load := func(keys map[string]string) *Config {
		c, err := Load(writeBroker(t, dir, keys), opts(env...))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old, next := load(base), load(edited)
	if p := Diff(old, next); len(p.Broker) != 0 {
		t.Errorf("env-pinned keys changed on reload: %q", p.Lines())
	}
	if b := next.Broker; b.LogFormat != "json" || b.LogLevel != "warn" || b.HelloTimeout.String() != "5s" {
		t.Errorf("broker after reload %+v", b)
	}
}

// writeBroker writes a broker.toml with the given [broker] keys and one launch service.
func writeBroker(t *testing.T, dir string, keys map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("[broker]\n")
	for k, v := range keys {
		b.WriteString(k + " = " + v + "\n")
	}
	b.WriteString("\n[[service]]\nname = \"*\"\nmode = \"launch\"\nsocket = \"" + dir + "/any.sock\"\n")
	path := filepath.Join(dir, "broker.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadBroker(t *testing.T, dir string, keys map[string]string) *Config {
	t.Helper()
	c, err := Load(writeBroker(t, dir, keys), opts())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
