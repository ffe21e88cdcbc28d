package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// refusedLines decodes the hello_refused lines of a JSON log.
func refusedLines(t *testing.T, logs *testutil.SyncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["event"] == "hello_refused" {
			out = append(out, m)
		}
	}
	return out
}

// TestRefusalLogLevels: at the default level (info) a refused Hello is logged, sampled to
// one line per second per reason with the count held back; a RATE_LIMITED refusal (the
// answer to a flood, logged on its own line by what limited it) only at debug.
func TestRefusalLogLevels(t *testing.T) {
	refuse := func(code wirepb.ErrorCode, reason string) Router {
		return routerFunc(func(context.Context, *Request) (Route, error) {
			return Route{}, wire.Refuse(code, reason, 100)
		})
	}
	const burst = 20
	t.Run("refusal at info, sampled", func(t *testing.T) {
		logs := &testutil.SyncBuffer{}
		h := startLoop(t, Settings{Service: "zc", Router: refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered)},
			mapDefs{"zc": {Def: zcDef, Found: true}}, nil,
			func(l *Loop) { l.log = zerolog.New(logs).Level(zerolog.InfoLevel) })
		hello := frameBytes(t, helloFrame(t, goodHello()))
		sent := 0
		for range burst {
			if r := h.helloReply(hello).GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED {
				t.Fatalf("reply %v, want BACKEND_SPAWN_FAILED", r)
			}
			sent++
		}
		// Keep refusing until a refusal is let through again (the next second): its line
		// carries the count held back since the previous one, so once it is written the
		// lines and their counts add up to every refusal sent.
		accounted := func() (lines []map[string]any, total int) {
			lines = refusedLines(t, logs)
			for _, m := range lines {
				n, _ := m["suppressed"].(float64)
				total += 1 + int(n)
			}
			return lines, total
		}
		testutil.WaitFor(t, "a refusal line accounting for every refusal", func() bool {
			h.helloReply(hello)
			sent++
			_, total := accounted()
			return total == sent
		})
		lines, _ := accounted()
		for _, m := range lines {
			if m["level"] != "info" || m["reason"] != wire.ReasonNotRegistered || m["code"] != "ERROR_BACKEND_SPAWN_FAILED" {
				t.Errorf("refusal line %v, want info with code and reason", m)
			}
		}
		if len(lines) < 2 || len(lines) > sent/burst+1 {
			t.Fatalf("%d lines for %d refusals, want one a second; log:\n%s", len(lines), sent, logs)
		}
	})
	for _, lvl := range []zerolog.Level{zerolog.InfoLevel, zerolog.DebugLevel} {
		t.Run("RATE_LIMITED at "+lvl.String(), func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			h := startLoop(t, Settings{Service: "zc", Router: refuse(wirepb.ErrorCode_ERROR_RATE_LIMITED, wire.ReasonSpawnBudget)},
				mapDefs{"zc": {Def: zcDef, Found: true}}, nil,
				func(l *Loop) { l.log = zerolog.New(logs).Level(lvl) })
			hello := frameBytes(t, helloFrame(t, goodHello()))
			for range burst {
				if r := h.helloReply(hello).GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_RATE_LIMITED {
					t.Fatalf("reply %v, want RATE_LIMITED", r)
				}
			}
			want := 0
			if lvl == zerolog.DebugLevel {
				want = 1
			}
			if lines := refusedLines(t, logs); len(lines) != want || want == 1 && lines[0]["level"] != "debug" {
				t.Fatalf("%d RATE_LIMITED lines at level %s, want %d at debug; log:\n%s", len(lines), lvl, want, logs)
			}
		})
	}
}
