package supervisor

import (
	"context"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/sdk/backend"
)

// envEchoBackend makes the test binary act as a registered echo backend at that path, so
// tests get a real separate backend process without a build step.
const envEchoBackend = "SUPERVISOR_TEST_ECHO_BACKEND"

func TestMain(m *testing.M) {
	if ep := os.Getenv(envEchoBackend); ep != "" {
		os.Exit(runEchoBackend(ep))
	}
	goleak.VerifyTestMain(m)
}

func runEchoBackend(endpoint string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := backend.New(backend.Options{Endpoint: endpoint})
	if err != nil {
		return 1
	}
	if err := srv.Serve(ctx, func(ctx context.Context, c net.Conn) { io.Copy(c, c) }); err != nil {
		return 1
	}
	return 0
}
