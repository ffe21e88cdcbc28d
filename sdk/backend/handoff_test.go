package backend_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// clientPair returns the test's end of a connected socket pair and the fd of the other
// end, which the test passes to the backend like a broker passes a client.
func clientPair(t *testing.T) (net.Conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, fds[1]
}

// offer plays the broker's side of one v1 exchange and returns the backend's ack.
func offer(t *testing.T, hep string, sent, offered []byte, fd int) *wirepb.HandoffAck {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: hep, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := c.WriteMsgUnix(sent, oob, nil); err != nil {
		t.Fatal(err)
	}
	b, err := wire.HandoffOfferFrame(offered, "echo", 33)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	f, err := wire.ReadFrame(c, 1024)
	if err != nil {
		t.Fatalf("no ack: %v", err)
	}
	if f.Kind != wirepb.FrameKind_RESPONSE || f.PayloadProtocol != wire.ProtoHandoff || f.RequestId != 33 {
		t.Fatalf("ack frame %v", f)
	}
	var ack wirepb.HandoffAck
	if err := proto.Unmarshal(f.Payload, &ack); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ack.Token, offered) || ack.CorrelationId != 33 {
		t.Fatalf("ack does not echo the offer: %v", &ack)
	}
	return &ack
}

func token() []byte {
	b := make([]byte, wire.HandoffTokenLen)
	rand.Read(b)
	return b
}

func TestHandoffReceive(t *testing.T) {
	dir := shortDir(t)
	hep := filepath.Join(dir, "h.sock")
	declined := token()
	srv, _ := newServer(t, backend.Options{
		Endpoint: filepath.Join(dir, "be.sock"), HandoffEndpoint: hep,
		AcceptHandoff: func(tok []byte) bool { return !bytes.Equal(tok, declined) },
	})
	serve(t, srv, echo)
	fi, err := os.Stat(hep)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("handoff socket %v, %v; want mode 0600", fi, err)
	}

	replayed := token()
	cases := []struct {
		name          string
		sent, offered []byte
		noFD          bool
		accept        bool
		detail        string
	}{
		{"accepted", replayed, replayed, false, true, ""},
		{"replayed token", replayed, replayed, false, false, "token replayed"},
		{"offer token differs", token(), token(), false, false, "does not match"},
		{"no descriptor", nil, nil, true, false, "no 16-byte token"},
		{"declined by the hook", declined, declined, false, false, "declined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sent == nil {
				tc.sent = token()
				tc.offered = tc.sent
			}
			c, fd := clientPair(t)
			pass := fd
			if tc.noFD {
				pass = -1
			}
			ack := offer(t, hep, tc.sent, tc.offered, pass)
			unix.Close(fd) // the broker closes its copy after the exchange
			if ack.Accepted != tc.accept || !strings.Contains(ack.ErrorDetail, tc.detail) {
				t.Fatalf("ack %v, want accepted=%v detail %q", ack, tc.accept, tc.detail)
			}
			if !tc.accept {
				// The backend closed the declined fd: the client sees EOF, not a hang.
				if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
					t.Fatalf("declined client read %q, %v", b, err)
				}
				return
			}
			msg := []byte("\x01 served by the same handler")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo %q, %v", got, err)
			}
		})
	}
}

// Idle handoff connections (the broker's spares) and adopted clients must not hold Serve
// past cancellation; both listeners go away with it.
func TestHandoffShutdown(t *testing.T) {
	dir := shortDir(t)
	hep := filepath.Join(dir, "h.sock")
	srv, ep := newServer(t, backend.Options{Endpoint: filepath.Join(dir, "be.sock"), HandoffEndpoint: hep, Grace: 5 * time.Second})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var serr error
	wg.Go(func() {
		serr = srv.Serve(ctx, func(ctx context.Context, c net.Conn) { <-ctx.Done() })
	})
	var spares []net.Conn
	for range 3 {
		c, err := net.Dial("unix", hep)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		spares = append(spares, c)
	}
	_, fd := clientPair(t)
	tok := token()
	if ack := offer(t, hep, tok, tok, fd); !ack.Accepted {
		t.Fatalf("ack %v", ack)
	}
	unix.Close(fd)
	start := time.Now()
	cancel()
	wg.Wait()
	if serr != nil {
		t.Fatal(serr)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Serve took %v to stop", el)
	}
	for _, p := range []string{ep, hep} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s still exists: %v", p, err)
		}
	}
	for _, c := range spares {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("spare read %v, want EOF", err)
		}
	}
}
