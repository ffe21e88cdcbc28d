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
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
)

func TestMain(m *testing.M) {
	// The test binary is also the backends: registered ones (startBackend) and the ones
	// the broker under test launches.
	handofftest.MaybeChild()
	if os.Getenv(wire.EnvServiceName) != "" {
		os.Exit(runLaunchedBackend())
	}
	goleak.VerifyTestMain(m)
}

// runLaunchedBackend serves as the backend the broker under test launched.
func runLaunchedBackend() int {
	srv, err := backend.FromEnv()
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
