package events

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// follow runs Follow on path until the test ends and returns the events it emits.
func follow(t *testing.T, path string) <-chan *wirepb.LifecycleEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *wirepb.LifecycleEvent, 1024)
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, path, 5*time.Millisecond, func(e *wirepb.LifecycleEvent) { out <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	return out
}

// expect reads the events numbered from..to-1, in order, each once.
func expect(t *testing.T, got <-chan *wirepb.LifecycleEvent, from, to int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i := from; i < to; i++ {
		select {
		case e := <-got:
			if e.ConnectionId != uint64(i) {
				t.Fatalf("event %d: got connection_id %d", i, e.ConnectionId)
			}
		case <-deadline:
			t.Fatalf("event %d never came", i)
		}
	}
	select {
	case e := <-got:
		t.Fatalf("unexpected event %d after %d", e.ConnectionId, to-1)
	default:
	}
}

// Follow prints what the log holds, rotated files first, then every event the broker
// appends, across rotations, each once and in order.
func TestFollowAcrossRotations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	l, err := Open(path, Options{MaxBytes: 120, Keep: 50, BrokerInstance: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 10 { // several rotations before Follow starts
		l.Emit(numbered(i))
	}
	if _, err := os.Stat(path + ".2"); err != nil {
		t.Fatalf("fixture: no rotation happened: %v", err)
	}
	got := follow(t, path)
	expect(t, got, 0, 10)
	for i := 10; i < 40; i++ { // more rotations while following
		l.Emit(numbered(i))
	}
	expect(t, got, 10, 40)
	if l.Stats().Rotations < 5 {
		t.Fatalf("only %d rotations", l.Stats().Rotations)
	}
}

// A record written in two parts is emitted once, when whole; a log that does not exist
// yet is waited for.
func TestFollowTornRecordAndLateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	got := follow(t, path)
	rec := records(t, numbered(0), numbered(1))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := len(rec) - 5
	if _, err := f.Write(rec[:half]); err != nil {
		t.Fatal(err)
	}
	expect(t, got, 0, 1)
	if _, err := f.Write(rec[half:]); err != nil {
		t.Fatal(err)
	}
	expect(t, got, 1, 2)
}
