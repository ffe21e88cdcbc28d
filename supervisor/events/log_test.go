package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

var t0 = time.UnixMilli(1_700_000_000_000)

func fixedNow() time.Time { return t0 }

func open(t *testing.T, path string, o Options) *Log {
	t.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func numbered(i int) Event {
	return Event{Kind: wirepb.EventKind_HELLO_ACCEPTED, Service: "svc", ConnectionID: uint64(i),
		Reason: "event " + strconv.Itoa(i)}
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "events.log")
	l := open(t, path, Options{BrokerInstance: "private:svc"})
	in := []Event{
		{Kind: wirepb.EventKind_SPAWN, Service: "svc", Version: "1.2.0", PID: 42, Reason: "spawned",
			Extra: map[string]string{"binary": "/usr/bin/svc"}},
		{Kind: wirepb.EventKind_HELLO_REFUSED, Service: "svc", RequestID: "req-7", ConnectionID: 9,
			Reason: "version not allowed", Time: t0.Add(time.Second)},
		{Kind: wirepb.EventKind_DIED_CRASH, Service: "svc", PID: 42, Instance: "explicit:blue", Severity: SeverityFatal},
	}
	for _, e := range in {
		l.Emit(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil || len(got) != len(in) {
		t.Fatalf("ReadFile: %d events, %v", len(got), err)
	}
	want := []struct {
		ts       uint64
		sev      uint32
		text     string
		instance string
		version  string
	}{
		{uint64(t0.UnixMilli()), 9, "INFO", "private:svc", "1.2.0"},
		{uint64(t0.UnixMilli()) + 1000, 13, "WARN", "private:svc", ""},
		{uint64(t0.UnixMilli()), 21, "FATAL", "explicit:blue", ""},
	}
	for i, m := range got {
		w := want[i]
		if m.Kind != in[i].Kind || m.ServiceName != in[i].Service || m.Reason != in[i].Reason || m.Pid != in[i].PID ||
			m.RequestId != in[i].RequestID || m.ConnectionId != in[i].ConnectionID || m.TsMs != w.ts ||
			m.SeverityNumber != w.sev || m.SeverityText != w.text || m.BrokerInstance != w.instance ||
			m.Extra["version"] != w.version {
			t.Errorf("event %d: got %v", i, m)
		}
	}
	if got[0].Extra["binary"] != "/usr/bin/svc" {
		t.Errorf("extra lost: %v", got[0].Extra)
	}
	recent := l.Recent()
	if len(recent) != 3 || recent[0].Version != "1.2.0" || recent[2].Instance != "explicit:blue" ||
		!recent[1].Time.Equal(t0.Add(time.Second)) {
		t.Errorf("Recent = %+v", recent)
	}
}

func TestModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	path := filepath.Join(dir, "events.log")
	open(t, path, Options{}).Emit(numbered(1))
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {path, 0o600}} {
		st, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != tc.want {
			t.Errorf("%s: mode %v, want %v", tc.path, st.Mode(), tc.want)
		}
	}
}

func TestRotation(t *testing.T) {
	const n = 200
	for _, tc := range []struct {
		name     string
		maxBytes int64
		keep     int
		all      bool // every event survives
	}{
		{name: "keep enough", maxBytes: 1024, keep: 100, all: true},
		{name: "keep 3", maxBytes: 1024, keep: 3},
		{name: "keep 1", maxBytes: 600, keep: 1},
		{name: "one record per file", maxBytes: 1, keep: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.log")
			l := open(t, path, Options{MaxBytes: tc.maxBytes, Keep: tc.keep})
			for i := range n {
				l.Emit(numbered(i))
			}
			if st := l.Stats(); st.Errors != 0 || st.Written != n || st.Rotations == 0 {
				t.Fatalf("stats %+v", st)
			}
			for i := 1; i <= tc.keep+1; i++ {
				p := path + "." + strconv.Itoa(i)
				_, err := os.Stat(p)
				if exists := err == nil; exists != (i <= tc.keep) && !tc.all {
					t.Errorf("%s exists: %t", p, exists)
				}
			}
			var total int
			for _, p := range append([]string{path}, rotated(path, tc.keep)...) {
				st, err := os.Stat(p)
				if err != nil {
					continue
				}
				if st.Size() > max(tc.maxBytes, MaxRecordBytes) {
					t.Errorf("%s is %d bytes, max %d", p, st.Size(), tc.maxBytes)
				}
				evs, err := ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				total += len(evs)
			}
			all, err := ReadAll(path)
			if err != nil || len(all) != total {
				t.Fatalf("ReadAll: %d events (files hold %d), %v", len(all), total, err)
			}
			if tc.all && total != n {
				t.Fatalf("%d of %d events on disk", total, n)
			}
			// The files hold a gap-free tail of the sequence, oldest first.
			for i, m := range all {
				if want := uint64(n - len(all) + i); m.ConnectionId != want {
					t.Fatalf("event %d: connection %d, want %d", i, m.ConnectionId, want)
				}
			}
		})
	}
}

func rotated(path string, keep int) []string {
	var out []string
	for i := 1; i <= keep; i++ {
		out = append(out, path+"."+strconv.Itoa(i))
	}
	return out
}

func TestConcurrentEmit(t *testing.T) {
	const writers, each = 16, 200
	path := filepath.Join(t.TempDir(), "events.log")
	l := open(t, path, Options{MaxBytes: 32 << 10, Keep: 1000})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				l.Emit(Event{Kind: wirepb.EventKind_BROADCAST_ACK, PID: uint32(w), ConnectionID: uint64(i),
					Reason: fmt.Sprintf("writer %d event %d %0300d", w, i, 0)})
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Errors != 0 || st.Written != writers*each || st.Rotations == 0 {
		t.Fatalf("stats %+v", st)
	}
	all, err := ReadAll(path)
	if err != nil || len(all) != writers*each {
		t.Fatalf("ReadAll: %d events, %v", len(all), err)
	}
	next := make([]uint64, writers) // per writer, events appear in emit order
	for _, m := range all {
		if want := fmt.Sprintf("writer %d event %d %0300d", m.Pid, m.ConnectionId, 0); m.Reason != want {
			t.Fatalf("record damaged: %q", m.Reason)
		}
		if m.ConnectionId != next[m.Pid] {
			t.Fatalf("writer %d: event %d after %d", m.Pid, m.ConnectionId, next[m.Pid])
		}
		next[m.Pid]++
	}
}

func TestRecentRing(t *testing.T) {
	for _, tc := range []struct {
		size, emit int
	}{{4, 0}, {4, 2}, {4, 4}, {4, 10}, {1, 3}} {
		t.Run(fmt.Sprintf("ring %d emit %d", tc.size, tc.emit), func(t *testing.T) {
			l := open(t, filepath.Join(t.TempDir(), "events.log"), Options{Recent: tc.size})
			for i := range tc.emit {
				l.Emit(numbered(i))
			}
			got := l.Recent()
			var ids []uint64
			for _, e := range got {
				ids = append(ids, e.ConnectionID)
			}
			var want []uint64
			for i := max(0, tc.emit-tc.size); i < tc.emit; i++ {
				want = append(want, uint64(i))
			}
			if !slices.Equal(ids, want) {
				t.Errorf("Recent ids %v, want %v", ids, want)
			}
			if js := l.RecentJSON(); len(js) != len(want) {
				t.Errorf("RecentJSON has %d entries, want %d", len(js), len(want))
			}
		})
	}
}

func TestRecentJSON(t *testing.T) {
	l := open(t, filepath.Join(t.TempDir(), "events.log"), Options{BrokerInstance: "shared"})
	l.Emit(Event{Kind: wirepb.EventKind_SPAWN, Service: "svc", PID: 7, RequestID: "r1", ConnectionID: 3})
	b, err := json.Marshal(l.RecentJSON())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"ts_ms": float64(t0.UnixMilli()), "pid": float64(7), "service_name": "svc", "kind": "SPAWN",
		"reason": "", "extra": map[string]any{}, "severity_number": float64(9), "severity_text": "INFO",
		"request_id": "r1", "connection_id": float64(3), "broker_instance": "shared",
	}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("RecentJSON = %s", b)
	}
}

func TestFailuresAreCounted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	l := open(t, path, Options{MaxBytes: 1, Keep: 1})
	l.Emit(numbered(0))
	// A directory where path.1 must go makes the rotation rename fail; the log carries on.
	if err := os.MkdirAll(filepath.Join(path+".1", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	l.Emit(numbered(1))
	st := l.Stats()
	if st.Errors != 1 || st.LastErr == nil || st.Written != 2 {
		t.Errorf("after failed rotation: %+v", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Emit(numbered(2))
	st = l.Stats()
	if st.Errors != 2 || !errors.Is(st.LastErr, ErrClosed) || len(l.Recent()) != 3 {
		t.Errorf("after close: %+v, recent %d", st, len(l.Recent()))
	}
	evs, err := ReadFile(path)
	if err != nil || len(evs) != 2 {
		t.Errorf("file holds %d events, %v", len(evs), err)
	}
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"", filepath.Join(file, "events.log")} {
		if l, err := Open(path, Options{}); err == nil {
			l.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

func BenchmarkEmit(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "events.log"), Options{MaxBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := Event{Kind: wirepb.EventKind_HELLO_ACCEPTED, Service: "svc", Version: "1.2.3", RequestID: "req-1",
		ConnectionID: 7, Reason: "negotiated", Extra: map[string]string{"protocol": "1"}}
	for b.Loop() {
		l.Emit(e)
	}
}
