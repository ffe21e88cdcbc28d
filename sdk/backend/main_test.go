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

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/testutil"
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

// shortDir stays for the handoff*_test.go files, edited in parallel elsewhere.
func shortDir(t *testing.T) string { return testutil.ShortDir(t) }
