package task

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStopCancelsAndWaits(t *testing.T) {
	returned := make(chan struct{})
	tk := Go(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		close(returned)
		return ctx.Err()
	})
	if err := tk.Stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v, want the goroutine's context.Canceled", err)
	}
	select {
	case <-returned:
	default:
		t.Fatal("Stop returned before the goroutine did")
	}
}

func TestParentCancelStops(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	tk := Go(parent, func(ctx context.Context) error { <-ctx.Done(); return nil })
	cancel()
	<-tk.Done()
}

func TestStopWithinReportsAStuckTask(t *testing.T) {
	release := make(chan struct{})
	tk := Go(context.Background(), func(ctx context.Context) error { <-release; return nil })
	if tk.StopWithin(10 * time.Millisecond) {
		t.Fatal("StopWithin reported a stuck task as stopped")
	}
	close(release)
	if !tk.StopWithin(time.Minute) {
		t.Fatal("StopWithin did not see the task stop")
	}
}

func TestNilTaskIsStopped(t *testing.T) {
	var tk *Task
	if err := tk.Stop(); err != nil {
		t.Fatal(err)
	}
	tk.Cancel()
	if !tk.StopWithin(0) {
		t.Fatal("nil task not stopped")
	}
}

func TestReturningEarlyReleasesTheContext(t *testing.T) {
	var got context.Context
	tk := Go(context.Background(), func(ctx context.Context) error { got = ctx; return nil })
	<-tk.Done()
	if got.Err() == nil {
		t.Fatal("context of a finished task still live")
	}
}
