package backend_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// probeOffer plays the broker's capability probe: the zero token alone, without a
// descriptor unless fd >= 0, then the offer with relay, reuse, probe and quiet if asked.
func probeOffer(t *testing.T, c *net.UnixConn, fd int, quiet bool) []byte {
	t.Helper()
	tok := make([]byte, wire.HandoffTokenLen)
	offer, err := wire.HandoffOfferFrameExt(tok, "", 0, wire.HandoffExt{RelayConnID: 1, Reuse: true, Probe: true, Quiet: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := c.WriteMsgUnix(tok, oob, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(offer); err != nil {
		t.Fatal(err)
	}
	body, err := wire.ReadFrameBody(c, 1024)
	if err != nil {
		t.Fatalf("no probe answer: %v", err)
	}
	return body
}

// A probe is answered as an ext backend, never reaches the Handler, records no token
// (a second probe is answered too) and leaves the connection ready for a handoff. A
// probe that carries a descriptor is no probe: declined, its descriptor closed.
func TestHandoffProbe(t *testing.T) {
	dir := shortDir(t)
	hep := filepath.Join(dir, "h.sock")
	srv, _ := newServer(t, backend.Options{Endpoint: filepath.Join(dir, "be.sock"), HandoffEndpoint: hep})
	var handled atomic.Int64
	serve(t, srv, func(ctx context.Context, c net.Conn) { handled.Add(1); echo(ctx, c) })
	dial := func() *net.UnixConn { return dialHandoff(t, hep) }

	c := dial()
	for _, quiet := range []bool{true, false} {
		if got, err := wire.ParseHandoffProbeAck(probeOffer(t, c, -1, quiet)); err != nil || !got.Relayed || !got.Reuse || got.Quiet != quiet {
			t.Fatalf("probe (quiet %v) answer %+v, %v", quiet, got, err)
		}
	}
	cl, fd := clientPair(t)
	defer unix.Close(fd)
	tok := token()
	if _, err := wire.ParseHandoffAckExt(sendOne(t, c, tok, wire.HandoffExt{RelayConnID: 5, Reuse: true}, fd), wirepb.FrameKind_RESPONSE, tok, 33); err != nil {
		t.Fatalf("handoff after the probes: %v", err)
	}
	if _, err := wire.ReadFrameBody(cl, 1024); err != nil {
		t.Fatalf("no handoff-ready EVENT: %v", err)
	}
	echoRoundTripConn(t, cl)
	if n := handled.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want once (never for a probe)", n)
	}

	// A "probe" with a descriptor is declined as malformed.
	_, fd2 := clientPair(t)
	defer unix.Close(fd2)
	body := probeOffer(t, dial(), fd2, true)
	if _, err := wire.ParseHandoffProbeAck(body); err == nil {
		t.Fatal("probe with a descriptor answered as a probe")
	}
	if err := wire.ParseHandoffAck(body, wirepb.FrameKind_RESPONSE, make([]byte, wire.HandoffTokenLen), 0); !errors.Is(err, wire.ErrNotAccepted) || !strings.Contains(err.Error(), "probe") {
		t.Fatalf("probe with a descriptor: %v, want a decline", err)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
}

func echoRoundTripConn(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
	}
}
