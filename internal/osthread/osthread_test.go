package osthread

import (
	"context"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every call runs on the one thread that serves them; once Serve has returned, none runs.
func TestDoRunsOnTheServingThread(t *testing.T) {
	th := New()
	stop := make(chan struct{})
	served, returned := make(chan int, 1), make(chan struct{})
	go func() {
		defer close(returned)
		served <- unix.Gettid() // Serve locks this goroutine to the thread it runs on now
		th.Serve(stop)
	}()
	want := <-served
	for range 50 {
		var got int
		if !th.Do(func() { got = unix.Gettid() }) {
			t.Fatal("Do refused while Serve runs")
		}
		if got != want {
			t.Fatalf("call ran on thread %d, Serve on %d", got, want)
		}
	}
	close(stop)
	<-returned
	ran := false
	if th.Do(func() { ran = true }) || ran {
		t.Fatal("Do ran a call after Serve returned")
	}
}

func TestMainServesUntilFReturns(t *testing.T) {
	calls := 0
	code := Main(context.Background(), func(ctx context.Context) int {
		th := FromContext(ctx)
		if th == nil {
			return 1
		}
		th.Do(func() { calls++ })
		th.Do(func() { calls++ })
		return 42
	})
	if code != 42 || calls != 2 {
		t.Fatalf("Main = %d with %d calls; want 42 with 2", code, calls)
	}
}
