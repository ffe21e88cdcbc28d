package main

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

// The test binary doubles as the real broker and as an echo backend, so end-to-end tests
// run real processes without a separate build step.
const (
	envRunBroker  = "BROKER_TEST_RUN_MAIN"
	envRunBackend = "BROKER_TEST_RUN_ECHO_BACKEND"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRunBroker) == "1" {
		main()
	}
	if ep := os.Getenv(envRunBackend); ep != "" {
		os.Exit(runEcho(ep))
	}
	goleak.VerifyTestMain(m)
}

func runEcho(endpoint string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := backend.New(backend.Options{Endpoint: endpoint})
	if err != nil {
		return 1
	}
	if err := srv.Serve(ctx, func(_ context.Context, c net.Conn) { io.Copy(c, c) }); err != nil {
		return 1
	}
	return 0
}
