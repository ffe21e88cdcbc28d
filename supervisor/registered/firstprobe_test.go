package registered_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/registered"
)

// TestRouteWaitsForFirstProbe: a Hello routed before the first probe has answered (the
// Hello that socket-activated the broker) waits for that answer instead of being refused
// at once. The endpoint here accepts and never answers, so the probe answers "down" after
// its 500ms: Route returns then, with the refusal, and Probed is closed.
func TestRouteWaitsForFirstProbe(t *testing.T) {
	ep := filepath.Join(testutil.ShortDir(t), "silent.sock")
	ln, err := net.Listen("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			held <- c
		}
	}()
	t.Cleanup(func() {
		select {
		case c := <-held:
			c.Close()
		default:
		}
	})
	e := run(t, ep, registered.Options{Verify: registered.VerifyProbe})
	start := time.Now()
	e.wantRefused(t, version)
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("Route answered after %v, before the first probe did", waited)
	}
	select {
	case <-e.b.Probed():
	default:
		t.Fatal("Route returned while Probed is still open")
	}
}
