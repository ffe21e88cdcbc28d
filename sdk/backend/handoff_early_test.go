package backend_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// sendOne plays one broker exchange with the token and the offer frame in a single
// sendmsg (what our broker does on a proven connection) and returns the raw ack body.
func sendOne(t *testing.T, c *net.UnixConn, tok []byte, ext wire.HandoffExt, fd int) []byte {
	t.Helper()
	send(t, c, tok, tok, ext, fd)
	body, err := wire.ReadFrameBody(c, 1024)
	if err != nil {
		t.Fatalf("no ack: %v", err)
	}
	return body
}

// echoHandoffServer runs an echo backend with a handoff endpoint and returns that path.
func echoHandoffServer(t *testing.T) string {
	t.Helper()
	dir := shortDir(t)
	hep := filepath.Join(dir, "h.sock")
	srv, _ := newServer(t, backend.Options{Endpoint: filepath.Join(dir, "be.sock"), HandoffEndpoint: hep})
	serve(t, srv, echo)
	return hep
}

// dialHandoff connects to a handoff endpoint as the broker does, closed with the test.
func dialHandoff(t *testing.T, hep string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: hep, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// send writes the token message with fd and an offer for offered, in one sendmsg.
func send(t *testing.T, c *net.UnixConn, tok, offered []byte, ext wire.HandoffExt, fd int) {
	t.Helper()
	offer, err := wire.HandoffOfferFrameExt(offered, "echo", 33, ext)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WriteMsgUnix(append(append([]byte{}, tok...), offer...), unix.UnixRights(fd), nil); err != nil {
		t.Fatal(err)
	}
}

// A v1 exchange whose token and offer share one message is the same byte stream: the
// backend reads exactly the 16 token bytes, then the offer frame. With relay, the EVENT
// reaches the client before the handler reads the bytes the client wrote early, and a
// backend that cannot write the EVENT declines without reading them.
func TestHandoffOneMessage(t *testing.T) {
	hep := echoHandoffServer(t)

	cases := []struct {
		name     string
		ext      wire.HandoffExt
		shutRead bool // the client stops reading first: the relay write fails
		accept   bool
	}{
		{"v1 offer", wire.HandoffExt{}, false, true},
		{"relay with early data", wire.HandoffExt{RelayConnID: 9, Reuse: true}, false, true},
		{"relay impossible: declined, early data unread", wire.HandoffExt{RelayConnID: 9, Reuse: true}, true, false},
	}
	c := dialHandoff(t, hep)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl, fd := clientPair(t)
			defer unix.Close(fd)
			early := []byte("early \x00 bytes")
			if _, err := cl.Write(early); err != nil {
				t.Fatal(err)
			}
			if tc.shutRead {
				if err := cl.(*net.UnixConn).CloseRead(); err != nil {
					t.Fatal(err)
				}
			}
			hc := c
			if !tc.ext.Reuse {
				hc = dialHandoff(t, hep) // v1: one exchange per connection
			}
			tok := token()
			got, err := wire.ParseHandoffAckExt(sendOne(t, hc, tok, tc.ext, fd), wirepb.FrameKind_RESPONSE, tok, 33)
			if tc.accept != (err == nil) {
				t.Fatalf("ack: %v, want accepted=%v", err, tc.accept)
			}
			if !tc.accept {
				if !strings.Contains(err.Error(), "relay") {
					t.Fatalf("decline detail %v", err)
				}
				// Nobody read the early bytes: they still wait in the socket.
				buf := make([]byte, 64)
				n, err := unix.Read(fd, buf)
				if err != nil || !bytes.Equal(buf[:n], early) {
					t.Fatalf("after decline the socket holds %q, %v; want %q", buf[:n], err, early)
				}
				return
			}
			if got.Relayed != (tc.ext.RelayConnID != 0) || got.Reuse != tc.ext.Reuse {
				t.Fatalf("ack ext %+v for offer %+v", got, tc.ext)
			}
			if tc.ext.RelayConnID != 0 {
				// The EVENT comes first, read exactly; the echo of the early bytes follows.
				body, err := wire.ReadFrameBody(cl, 1024)
				if err != nil {
					t.Fatal(err)
				}
				var f wirepb.Frame
				var ack wirepb.HandoffAck
				if proto.Unmarshal(body, &f) != nil || f.Kind != wirepb.FrameKind_EVENT || proto.Unmarshal(f.Payload, &ack) != nil ||
					!ack.Accepted || !bytes.Equal(ack.Token, tok) || ack.CorrelationId != 9 {
					t.Fatalf("first frame %v %v, want the handoff-ready EVENT", &f, &ack)
				}
			}
			echoed := make([]byte, len(early))
			if _, err := io.ReadFull(cl, echoed); err != nil || !bytes.Equal(echoed, early) {
				t.Fatalf("echo %q, %v", echoed, err)
			}
		})
	}
}

// Quiet exchanges (ours): an accepted one gets no ack at all, so the next exchange on the
// connection is answered first; a declined one is acked, and the backend hangs up.
func TestHandoffQuiet(t *testing.T) {
	c := dialHandoff(t, echoHandoffServer(t))

	quiet := wire.HandoffExt{RelayConnID: 9, Reuse: true, Quiet: true}
	for range 2 { // back to back: nothing is read between them
		cl, fd := clientPair(t)
		tok := token()
		send(t, c, tok, tok, quiet, fd)
		unix.Close(fd)
		if _, err := wire.ReadFrameBody(cl, 1024); err != nil {
			t.Fatalf("no handoff-ready EVENT: %v", err)
		}
		echoRoundTripConn(t, cl)
	}
	// The first bytes on the handoff connection answer this acked exchange.
	cl, fd := clientPair(t)
	tok := token()
	got, err := wire.ParseHandoffAckExt(sendOne(t, c, tok, wire.HandoffExt{RelayConnID: 9, Reuse: true}, fd), wirepb.FrameKind_RESPONSE, tok, 33)
	unix.Close(fd)
	if err != nil || !got.Relayed || !got.Reuse {
		t.Fatalf("first ack read: %+v, %v; want the third exchange's", got, err)
	}
	if _, err := wire.ReadFrameBody(cl, 1024); err != nil {
		t.Fatalf("no handoff-ready EVENT: %v", err)
	}

	// A quiet decline is acked, and the connection ends.
	_, fd = clientPair(t)
	defer unix.Close(fd)
	offered := token() // not the token passed: declined
	send(t, c, token(), offered, quiet, fd)
	body, err := wire.ReadFrameBody(c, 1024)
	if err != nil {
		t.Fatalf("no ack for a quiet decline: %v", err)
	}
	if err := wire.ParseHandoffAck(body, wirepb.FrameKind_RESPONSE, offered, 33); !errors.Is(err, wire.ErrNotAccepted) || !strings.Contains(err.Error(), "does not match the passed token") {
		t.Fatalf("quiet decline: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after a quiet decline: read %d, %v; want EOF", n, err)
	}
}

// An adopted client is non-blocking whatever the broker passed (a v1 broker may pass a
// blocking descriptor), so the handler's reads park on the poller and honour deadlines.
// The flag lives on the shared open file description: the test sees it on its copy.
func TestHandoffAdoptsNonBlocking(t *testing.T) {
	c := dialHandoff(t, echoHandoffServer(t))
	for _, nonblocking := range []bool{false, true} {
		cl, fd := clientPair(t)
		if err := unix.SetNonblock(fd, nonblocking); err != nil {
			t.Fatal(err)
		}
		tok := token()
		send(t, c, tok, tok, wire.HandoffExt{RelayConnID: 9, Reuse: true, Quiet: true}, fd)
		if _, err := wire.ReadFrameBody(cl, 1024); err != nil {
			t.Fatalf("no handoff-ready EVENT: %v", err)
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		unix.Close(fd)
		if err != nil || flags&unix.O_NONBLOCK == 0 {
			t.Fatalf("passed non-blocking=%v: adopted flags %#x, %v; want O_NONBLOCK", nonblocking, flags, err)
		}
		echoRoundTripConn(t, cl)
	}
}

// A broker may queue a quiet exchange behind one the backend is about to decline (it
// reads nothing back before reusing the connection). The decline ends the connection,
// and the descriptor queued behind is released with it: that client sees EOF, never an
// EVENT, and falls back with nothing of its data read.
func TestHandoffQuietQueuedBehindDecline(t *testing.T) {
	dir := shortDir(t)
	hep := filepath.Join(dir, "h.sock")
	// The backend holds its decision on the first exchange until the second is queued;
	// it would accept any other.
	decide := make(chan bool)
	var calls atomic.Int32
	srv, _ := newServer(t, backend.Options{Endpoint: filepath.Join(dir, "be.sock"), HandoffEndpoint: hep,
		AcceptHandoff: func([]byte) bool { return calls.Add(1) > 1 || <-decide }})
	serve(t, srv, echo)
	c := dialHandoff(t, hep)
	quiet := wire.HandoffExt{RelayConnID: 9, Reuse: true, Quiet: true}

	_, fd1 := clientPair(t)
	cl2, fd2 := clientPair(t)
	if _, err := cl2.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	tok1, tok2 := token(), token()
	send(t, c, tok1, tok1, quiet, fd1)
	send(t, c, tok2, tok2, quiet, fd2)
	unix.Close(fd1)
	unix.Close(fd2)
	decide <- false // the first is declined; the second must never be read

	body, err := wire.ReadFrameBody(c, 1024)
	if err != nil {
		t.Fatalf("no decline: %v", err)
	}
	if err := wire.ParseHandoffAck(body, wirepb.FrameKind_RESPONSE, tok1, 33); !errors.Is(err, wire.ErrNotAccepted) {
		t.Fatalf("first exchange: %v, want a decline", err)
	}
	// Hung up with the second exchange unread: EOF or a reset.
	if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("after the decline: %d, %v; want EOF or a reset", n, err)
	}
	cl2.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(cl2); len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("queued client got %q, %v; want EOF (or a reset), no EVENT", b, err)
	}
}
