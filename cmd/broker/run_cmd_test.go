package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The log format: JSON when the output is not a terminal (auto), text or JSON when the
// config says so, and RP_BROKER_LOG_FORMAT over both.
func TestNewLoggerFormat(t *testing.T) {
	for _, tc := range []struct {
		env, cfg, level string
		json            bool
		debugShown      bool
	}{
		{"", "auto", "info", true, false}, // a buffer is not a terminal
		{"", "text", "info", false, false},
		{"", "json", "debug", true, true},
		{"text", "json", "info", false, false},
		{"json", "text", "info", true, false},
		{"", "auto", "bogus", true, false}, // unparseable level: info
	} {
		t.Setenv("RP_BROKER_LOG_FORMAT", tc.env)
		var buf bytes.Buffer
		log := newLogger(&buf, tc.cfg, tc.level)
		log.Debug().Msg("debug line")
		log.Info().Str("service", "zc").Msg("hello")
		out := buf.String()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if got := json.Valid([]byte(last)); got != tc.json {
			t.Errorf("env %q cfg %q: JSON=%v, want %v: %q", tc.env, tc.cfg, got, tc.json, last)
		}
		if got := strings.Contains(out, "debug line"); got != tc.debugShown {
			t.Errorf("level %q: debug shown=%v, want %v", tc.level, got, tc.debugShown)
		}
		if !strings.Contains(last, "broker_pid") || !strings.Contains(last, "zc") {
			t.Errorf("fields missing: %q", last)
		}
	}
}
