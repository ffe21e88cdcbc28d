package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
)

// The test binary doubles as the real broker (this env var) and as an echo backend
// (handofftest), so end-to-end tests run real processes without a separate build step.
const envRunBroker = "BROKER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(wire.EnvServiceName) != "" {
		os.Exit(runLaunchedEcho()) // a backend the broker under test launched
	}
	if os.Getenv(envRunBroker) == "1" {
		main()
	}
	handofftest.MaybeChild()
	goleak.VerifyTestMain(m)
}
