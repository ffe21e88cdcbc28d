package handoff_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

func TestMain(m *testing.M) {
	handofftest.MaybeChild()
	goleak.VerifyTestMain(m)
}
