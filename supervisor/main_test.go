package supervisor

import (
	"context"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
)

func TestMain(m *testing.M) {
	// The test binary is also the backends: registered ones (startBackend) and the ones
	// the broker under test launches.
	handofftest.MaybeChild()
	switch os.Getenv(wire.EnvServiceName) {
	case "":
	case hangService:
		os.Exit(hangUnready())
	default:
		os.Exit(runLaunchedBackend())
	}
	goleak.VerifyTestMain(m)
}

// hangService names a launched backend that never becomes ready and ignores SIGTERM:
// only SIGKILL (or its start_timeout) ends it.
const hangService = "hang"

func hangUnready() int {
	signal.Ignore(syscall.SIGTERM)
	time.Sleep(time.Minute) // the process's whole behaviour: be slow, not a synchronisation
	return 1
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
