package identity_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
)

// TestMain doubles as a real backend process: with IDENTITY_TEST_CHILD=1 the test binary
// binds IDENTITY_TEST_ENDPOINT and answers probes until killed.
func TestMain(m *testing.M) {
	if os.Getenv("IDENTITY_TEST_CHILD") == "1" {
		if err := serveChild(os.Getenv("IDENTITY_TEST_ENDPOINT")); err != nil {
			os.Stderr.WriteString("identity test child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func serveChild(endpoint string) error {
	ln, err := net.Listen("unix", endpoint)
	if err != nil {
		return err
	}
	self, err := identity.Self(endpoint)
	if err != nil {
		return err
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if req, err := wire.ReadFrame(conn, wire.MaxHelloBody); err == nil {
			_ = identity.Answer(conn, req, self)
		}
		conn.Close()
	}
}

// startChild runs exe as a probe-answering backend on endpoint and waits until it answers.
func startChild(t *testing.T, cmd *exec.Cmd, endpoint string) {
	t.Helper()
	cmd.Env = append(os.Environ(), "IDENTITY_TEST_CHILD=1", "IDENTITY_TEST_ENDPOINT="+endpoint)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	testutil.WaitForErr(t, 10*time.Second, func() error {
		_, err := identity.Probe(context.Background(), endpoint)
		return err
	})
}

func mustIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}
