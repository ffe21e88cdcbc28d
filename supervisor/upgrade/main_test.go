package upgrade

import (
	"context"
	"os"
	"runtime"
	"testing"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/osthread"
)

// The test binary is also the process that execs itself (envRole=keeper) and its child
// (envRole=sleeper), so the tests run real processes across a real execve.
const (
	envRole = "UPGRADE_TEST_ROLE"
	envSock = "UPGRADE_TEST_SOCK"
	// envStartOn and envExecOn pick the thread ("main" or "other") that starts the
	// sleeper and that execs.
	envStartOn = "UPGRADE_TEST_START_ON"
	envExecOn  = "UPGRADE_TEST_EXEC_ON"
)

// As in cmd/broker: the main goroutine stays on the main thread, where the keeper serves
// its osthread.Thread.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "keeper":
		os.Exit(osthread.Main(context.Background(), runKeeper))
	case "sleeper":
		os.Exit(runSleeper())
	case "newbin":
		os.Exit(runNewBinary())
	}
	goleak.VerifyTestMain(m)
}
