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
	if os.Getenv(backend.EnvServiceName) != "" { // launched by the broker under test
		os.Exit(runLaunchedBackend())
	}
	goleak.VerifyTestMain(m)
}

func runEchoBackend(endpoint string) int {
	srv, err := backend.New(backend.Options{Endpoint: endpoint})
	return serveEcho(srv, err)
}

func runLaunchedBackend() int { return serveEcho(backend.FromEnv()) }

func serveEcho(srv *backend.Server, err error) int {
	if err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Serve(ctx, func(ctx context.Context, c net.Conn) { io.Copy(c, c) }); err != nil {
		return 1
	}
	return 0
}
