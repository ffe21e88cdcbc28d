package launch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// A Hello routed before Run has started waits for Run instead of being refused as
// "shutting down" (the cause of the flaky first attempt in the crash-loop test: the
// harness starts Run and the serve loop side by side).
func TestRouteBeforeRunWaitsForRun(t *testing.T) {
	dir := testutil.ShortDir(t)
	m := New(Options{
		Layout:  names.Layout{Dir: filepath.Join(dir, "run"), SID: testSID},
		Log:     zerolog.Nop(),
		Grace:   200 * time.Millisecond,
		Environ: testEnv(),
	})
	req := &serve.Request{
		Hello:    &wirepb.Hello{ServiceName: "echo", WantedVersion: "1.0.0"},
		Def:      &wirepb.ServiceDefinition{ServiceName: "echo", BinaryPath: filepath.Join(testBinDir, "backend"), PerVersionBinaryDir: testBinDir},
		Instance: "private:echo",
	}
	type result struct {
		rt  serve.Route
		err error
	}
	got := make(chan result, 1)
	go func() {
		rt, err := m.Router(Settings{}).Route(context.Background(), req)
		got <- result{rt, err}
	}()
	// Start Run only once Route is parked (or has already answered, the bug).
	testutil.WaitForErr(t, 10*time.Second, func() error {
		if len(got) > 0 || parkedIn("launch.router.Route(") {
			return nil
		}
		return errors.New("Route neither answered nor parked")
	})
	select {
	case r := <-got:
		t.Fatalf("Route before Run answered at once: %v", r.err)
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	r := <-got
	if r.err != nil {
		t.Fatalf("Route before Run: %v, want a spawned backend", r.err)
	}
	echoThrough(t, r.rt.Pipe)
}

// testEnv is the environment of a serving test backend started by a bare Manager.
func testEnv() []string {
	return append(os.Environ(), envRole+"=backend", "GORACE=atexit_sleep_ms=0")
}

// parkedIn reports whether a goroutine is blocked in a select inside fn.
func parkedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[select") && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
