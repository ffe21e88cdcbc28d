package backend_test

import (
	"context"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/sdk/backend"
)

// TestMain doubles as a launched backend: with BACKEND_TEST_CHILD=1 the test binary serves
// from the v1 environment (echoing data) until SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("BACKEND_TEST_CHILD") == "1" {
		if err := runChild(); err != nil {
			os.Stderr.WriteString("backend test child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv, err := backend.FromEnv()
	if err != nil {
		return err
	}
	return srv.Serve(ctx, echo)
}

// echo copies the connection back to itself; it honours ctx by closing the connection.
func echo(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, _ = io.Copy(conn, conn)
}

// serve runs srv in the background and stops it at cleanup, checking it returned nil.
func serve(t *testing.T, srv *backend.Server, h backend.Handler) context.CancelFunc {
	t.Helper()
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = srv.Serve(ctx, h) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return cancel
}

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "rpb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// roundTrip writes payload, half-closes, and returns everything the server sent.
func roundTrip(t *testing.T, ep string, payload []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.UnixConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func waitFor(t *testing.T, limit time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", limit, err)
		}
		<-tick.C
	}
}
