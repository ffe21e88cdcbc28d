package events

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

func TestSeverityText(t *testing.T) {
	for _, tc := range []struct {
		s    Severity
		want string
	}{
		{0, ""}, {1, "TRACE"}, {4, "TRACE4"}, {SeverityInfo, "INFO"}, {10, "INFO2"},
		{SeverityWarn, "WARN"}, {SeverityError, "ERROR"}, {20, "ERROR4"}, {24, "FATAL4"}, {99, "FATAL4"},
	} {
		if got := tc.s.Text(); got != tc.want {
			t.Errorf("Severity(%d).Text() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func manyExtra(n, size int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[string(rune('a'+i%26))+strings.Repeat("k", i/26)] = strings.Repeat("v", size)
	}
	return m
}

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ev        Event
		truncated bool
		check     func(t *testing.T, m *wirepb.LifecycleEvent)
	}{
		{name: "small event untouched", ev: Event{Kind: wirepb.EventKind_SPAWN, Service: "svc", Reason: "started",
			Extra: map[string]string{"a": "1"}},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if m.Reason != "started" || m.Extra["a"] != "1" {
					t.Errorf("changed: %v", m)
				}
			}},
		{name: "huge reason cut first, extra kept", truncated: true,
			ev: Event{Kind: wirepb.EventKind_DIED_CRASH, Service: "svc", Reason: strings.Repeat("r", 100_000),
				Extra: map[string]string{"exit": "139"}},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if m.Extra["exit"] != "139" || strings.Trim(m.Reason, "r") != "" || proto.Size(m) < MaxEventBytes-4 {
					t.Errorf("reason %d bytes, extra %v, size %d", len(m.Reason), m.Extra, proto.Size(m))
				}
			}},
		{name: "huge extra value: reason emptied, longest value cut, short values kept", truncated: true,
			ev: Event{Kind: wirepb.EventKind_HELLO_REFUSED, Reason: "why", Extra: map[string]string{
				"a": strings.Repeat("x", 100), "b": strings.Repeat("y", 10_000), "c": "139"}},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if m.Reason != "" || len(m.Extra["a"]) != 100 || m.Extra["c"] != "139" ||
					len(m.Extra["b"]) == 0 || strings.Trim(m.Extra["b"], "y") != "" {
					t.Errorf("reason %q, extra a=%d b=%d bytes c=%q", m.Reason, len(m.Extra["a"]), len(m.Extra["b"]), m.Extra["c"])
				}
			}},
		{name: "many keys: highest keys dropped", truncated: true,
			ev: Event{Kind: wirepb.EventKind_SPAWN, Service: "svc", Extra: manyExtra(200, 0)},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if _, ok := m.Extra["a"]; !ok || len(m.Extra) == 200 {
					t.Errorf("kept %d keys, a present: %t", len(m.Extra), ok)
				}
			}},
		{name: "huge key", truncated: true,
			ev: Event{Kind: wirepb.EventKind_SPAWN, Service: "svc", Extra: map[string]string{strings.Repeat("k", 4096): "v"}},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if len(m.Extra) != 0 || m.ServiceName != "svc" {
					t.Errorf("extra %d keys, service %q", len(m.Extra), m.ServiceName)
				}
			}},
		{name: "every string huge", truncated: true,
			ev: Event{Kind: wirepb.EventKind_SPAWN, Service: strings.Repeat("s", 2000), Reason: strings.Repeat("r", 2000),
				RequestID: strings.Repeat("q", 2000), Instance: strings.Repeat("i", 2000), PID: ^uint32(0),
				ConnectionID: ^uint64(0), Extra: manyExtra(50, 100)}},
		{name: "multi-byte reason not split", truncated: true,
			ev: Event{Kind: wirepb.EventKind_SPAWN, Reason: strings.Repeat("é€😀", 300)},
			check: func(t *testing.T, m *wirepb.LifecycleEvent) {
				if !utf8.ValidString(m.Reason) || m.Reason == "" {
					t.Errorf("reason %q", m.Reason)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, truncated, err := Encode(tc.ev.Proto("shared"))
			if err != nil {
				t.Fatal(err)
			}
			if truncated != tc.truncated {
				t.Errorf("truncated = %t, want %t", truncated, tc.truncated)
			}
			if len(rec) > MaxRecordBytes {
				t.Fatalf("record is %d bytes, bound %d", len(rec), MaxRecordBytes)
			}
			// Deterministic: another encoding (fresh map iteration order) gives the same bytes.
			again, _, _ := Encode(tc.ev.Proto("shared"))
			if !bytes.Equal(rec, again) {
				t.Error("two encodings of the same event differ")
			}
			evs, err := Decode(rec)
			if err != nil || len(evs) != 1 {
				t.Fatalf("decode: %d events, %v", len(evs), err)
			}
			if tc.check != nil {
				tc.check(t, evs[0])
			}
		})
	}
}

func TestBoundLeavesCallerExtra(t *testing.T) {
	extra := map[string]string{"b": strings.Repeat("y", 1000)}
	m := Event{Kind: wirepb.EventKind_SPAWN, Extra: extra}.Proto("")
	Bound(m, MaxEventBytes)
	if len(extra["b"]) != 1000 || proto.Size(m) > MaxEventBytes {
		t.Errorf("caller map changed or bound missed: %d, size %d", len(extra["b"]), proto.Size(m))
	}
}
