package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// The test binary doubles as the real broker (this env var) and as an echo backend
// (handofftest), so end-to-end tests run real processes without a separate build step.
const envRunBroker = "BROKER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunBroker) == "1" {
		main()
	}
	handofftest.MaybeChild()
	goleak.VerifyTestMain(m)
}
