package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The log format and level in force at start, and after a swap: a logger derived before
// the swap (as every service's is) follows it.
func TestLiveLog(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		format, level            string // at start
		toFormat, toLevel        string // swapped to; "" = no swap
		json, debugShown, infoOK bool
	}{
		{name: "auto is JSON off a terminal", format: "auto", level: "info", json: true, infoOK: true},
		{name: "text", format: "text", level: "info", infoOK: true},
		{name: "json debug", format: "json", level: "debug", json: true, debugShown: true, infoOK: true},
		{name: "bad level is info", format: "auto", level: "bogus", json: true, infoOK: true},
		{name: "raise to debug", format: "json", level: "info", toFormat: "json", toLevel: "debug", json: true, debugShown: true, infoOK: true},
		{name: "lower to warn", format: "json", level: "debug", toFormat: "json", toLevel: "warn", json: true},
		{name: "json to text", format: "json", level: "info", toFormat: "text", toLevel: "info", infoOK: true},
		{name: "text to json", format: "text", level: "info", toFormat: "json", toLevel: "info", json: true, infoOK: true},
		{name: "auto after text", format: "text", level: "info", toFormat: "auto", toLevel: "debug", json: true, debugShown: true, infoOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			live := newLiveLog(&buf, tc.format, tc.level)
			log := live.logger().With().Str("service", "zc").Logger()
			log.Info().Msg("before")
			if tc.toLevel != "" {
				live.set(tc.toFormat, tc.toLevel)
			}
			buf.Reset()
			log.Debug().Msg("debug line")
			log.Info().Msg("info line")
			log.Warn().Msg("warn line")
			out := buf.String()
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := lines[len(lines)-1]
			if got := json.Valid([]byte(last)); got != tc.json {
				t.Errorf("JSON=%v, want %v: %q", got, tc.json, last)
			}
			if got := strings.Contains(out, "debug line"); got != tc.debugShown {
				t.Errorf("debug shown=%v, want %v: %q", got, tc.debugShown, out)
			}
			if got := strings.Contains(out, "info line"); got != tc.infoOK {
				t.Errorf("info shown=%v, want %v: %q", got, tc.infoOK, out)
			}
			if !strings.Contains(last, "warn line") || !strings.Contains(last, "broker_pid") || !strings.Contains(last, "zc") {
				t.Errorf("warn line or fields missing: %q", last)
			}
		})
	}
}

// BenchmarkLiveLogDisabledDebug: a debug line below the level costs what it cost with a
// fixed level (no event is built).
func BenchmarkLiveLogDisabledDebug(b *testing.B) {
	var buf bytes.Buffer
	log := newLiveLog(&buf, "json", "info").logger().With().Str("service", "zc").Logger()
	b.ReportAllocs()
	for b.Loop() {
		log.Debug().Str("service", "zc").Uint64("connection_id", 1).Msg("negotiated")
	}
	if buf.Len() != 0 {
		b.Fatal("debug line written")
	}
}
