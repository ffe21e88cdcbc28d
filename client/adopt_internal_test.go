package client

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// unixPair returns both ends of a connected Unix stream socket.
func unixPair(t *testing.T) (client, peer *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return cs[0], cs[1]
}

// adopt reads exactly the EVENT; when the wait runs out it shuts the read side before
// looking at what is queued, so that no backend can adopt the socket afterwards, and
// tells a late adoption from none.
func TestAdopt(t *testing.T) {
	n := &wirepb.Negotiated{HandlePassedToken: []byte("0123456789abcdef"), ConnectionId: 5}
	event := func(tok []byte, id uint64) []byte {
		b, err := wire.HandoffAckFrame(wirepb.FrameKind_EVENT, id, &wirepb.HandoffAck{Token: tok, Accepted: true, CorrelationId: id})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	future, past := time.Now().Add(10*time.Second), time.Now().Add(-time.Second)
	cases := []struct {
		name       string
		queued     []byte
		closePeer  bool
		dl         time.Time
		ok, late   bool
		fenced     bool   // the peer can no longer write
		afterEvent string // still readable after adoption
	}{
		{"event", event(n.HandlePassedToken, 5), false, future, true, false, false, ""},
		{"event then the backend's reply", append(event(n.HandlePassedToken, 5), "reply"...), false, future, true, false, false, "reply"},
		{"event slipped in before the fence", event(n.HandlePassedToken, 5), false, past, false, true, true, ""},
		{"nothing by the deadline", nil, false, past, false, false, true, ""},
		{"other token", event([]byte("fedcba9876543210"), 5), false, future, false, false, false, ""},
		{"other connection id", event(n.HandlePassedToken, 6), false, future, false, false, false, ""},
		{"eof", nil, true, future, false, false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, p := unixPair(t)
			if _, err := p.Write(tc.queued); err != nil {
				t.Fatal(err)
			}
			if tc.closePeer {
				p.Close()
			}
			ok, late := adopt(c, n, tc.dl)
			if ok != tc.ok || late != tc.late {
				t.Fatalf("adopt = %v, %v; want %v, %v", ok, late, tc.ok, tc.late)
			}
			if tc.fenced {
				if _, err := p.Write([]byte("too late")); !errors.Is(err, syscall.EPIPE) {
					t.Fatalf("write after the fence: %v, want EPIPE", err)
				}
			}
			if tc.afterEvent != "" {
				got := make([]byte, len(tc.afterEvent))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != tc.afterEvent {
					t.Fatalf("after the event: %q, %v", got, err)
				}
			}
		})
	}
}
