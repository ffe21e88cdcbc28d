package client

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// pipeServer is a real backend_pipe listener: it records what each connection sent
// before closing its write side and answers "pipe".
type pipeServer struct {
	path string
	mu   sync.Mutex
	got  []string
}

func startPipe(t *testing.T) *pipeServer {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "rpb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &pipeServer{path: filepath.Join(dir, "pipe.sock")}
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("pipe"))
				b, _ := io.ReadAll(c)
				p.mu.Lock()
				p.got = append(p.got, string(b))
				p.mu.Unlock()
			})
		}
	})
	return p
}

func (p *pipeServer) received() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

// The lazy connection settles the EVENT on its first Read: a matching EVENT keeps the
// control connection; EOF, a mismatch or the end of the handoff wait move to
// backend_pipe with the early bytes sent there exactly once; an EVENT that slips in
// before the fence is ErrLateHandoff; a caller's deadline interrupts settling without
// ending it.
func TestLazyConn(t *testing.T) {
	n := &wirepb.Negotiated{HandlePassedToken: []byte("0123456789abcdef"), ConnectionId: 5}
	event := func(tok []byte) []byte {
		b, err := wire.HandoffAckFrame(wirepb.FrameKind_EVENT, 5, &wirepb.HandoffAck{Token: tok, Accepted: true, CorrelationId: 5})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ev := event(n.HandlePassedToken)
	future := time.Now().Add(10 * time.Second)
	cases := []struct {
		name      string
		queued    []byte
		closePeer bool
		until     time.Time
		want      string // first bytes read
		wantErr   error
		viaPipe   bool
	}{
		{"event then reply", append(append([]byte{}, ev...), "reply"...), false, future, "reply", nil, false},
		{"eof: backend_pipe", nil, true, future, "pipe", nil, true},
		{"other token: backend_pipe", event([]byte("fedcba9876543210")), false, future, "pipe", nil, true},
		{"handoff wait runs out: backend_pipe", nil, false, time.Now().Add(30 * time.Millisecond), "pipe", nil, true},
		{"event slipped in before the fence", ev, false, time.Now().Add(-time.Second), "", ErrLateHandoff, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pipe := startPipe(t)
			n := &wirepb.Negotiated{HandlePassedToken: n.HandlePassedToken, ConnectionId: 5, BackendPipe: pipe.path}
			c, p := unixPair(t)
			p.Write(tc.queued)
			if tc.closePeer {
				p.Close()
			}
			l := newLazyConn(c, n, tc.until, false)
			l.early = []byte("early")
			defer l.Close()
			l.SetDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(tc.want))
			var err error
			if tc.wantErr != nil {
				_, err = l.Read(make([]byte, 1))
			} else {
				_, err = io.ReadFull(l, got)
			}
			if !errors.Is(err, tc.wantErr) || string(got) != tc.want {
				t.Fatalf("read %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
			if err != nil {
				return
			}
			if _, err := l.Write([]byte("|more")); err != nil {
				t.Fatal(err)
			}
			if err := l.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if tc.viaPipe {
				waitFor(t, func() bool { return len(pipe.received()) == 1 })
				if r := pipe.received(); r[0] != "early|more" {
					t.Fatalf("backend_pipe got %q, want the early bytes once", r)
				}
				return
			}
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			if b, err := io.ReadAll(p); err != nil || string(b) != "|more" {
				t.Fatalf("control peer got %q, %v", b, err)
			}
			if len(pipe.received()) != 0 {
				t.Fatal("backend_pipe dialled after adoption")
			}
		})
	}

	t.Run("caller deadline interrupts settling", func(t *testing.T) {
		pipe := startPipe(t)
		n := &wirepb.Negotiated{HandlePassedToken: n.HandlePassedToken, ConnectionId: 5, BackendPipe: pipe.path}
		c, p := unixPair(t)
		l := newLazyConn(c, n, future, false)
		l.early = []byte("early")
		defer l.Close()
		p.Write(ev[:3]) // part of the EVENT: settling must resume from there
		l.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		start := time.Now()
		if _, err := l.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want a deadline error", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("deadline honoured after %v", el)
		}
		p.Write(append(append([]byte{}, ev[3:]...), "ok"...))
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 2)
		if _, err := io.ReadFull(l, got); err != nil || string(got) != "ok" {
			t.Fatalf("after resuming: %q, %v", got, err)
		}
		if len(pipe.received()) != 0 {
			t.Fatal("backend_pipe dialled")
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// Write-ahead (CapWriteAhead): writes go out on the control connection before any EVENT,
// up to MaxEarlyData with the early data; past that a write settles first. On a
// fallback, the early data and everything written ahead reach backend_pipe once, in
// order; also when a write ahead found the control connection gone.
func TestLazyConnWriteAhead(t *testing.T) {
	n := &wirepb.Negotiated{HandlePassedToken: []byte("0123456789abcdef"), ConnectionId: 5}
	ev, err := wire.HandoffAckFrame(wirepb.FrameKind_EVENT, 5, &wirepb.HandoffAck{Token: n.HandlePassedToken, Accepted: true, CorrelationId: 5})
	if err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(10 * time.Second)
	readN := func(t *testing.T, r io.Reader, k int) string {
		t.Helper()
		b := make([]byte, k)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("adopted: writes precede the EVENT", func(t *testing.T) {
		c, p := unixPair(t)
		l := newLazyConn(c, n, future, true)
		defer l.Close()
		l.SetDeadline(time.Now().Add(5 * time.Second))
		for _, w := range []string{"req1 ", "req2"} {
			if _, err := l.Write([]byte(w)); err != nil {
				t.Fatal(err)
			}
		}
		p.SetDeadline(time.Now().Add(5 * time.Second))
		if got := readN(t, p, 9); got != "req1 req2" {
			t.Fatalf("peer read %q before sending any EVENT", got)
		}
		p.Write(append(append([]byte{}, ev...), "reply"...))
		if got := readN(t, l, 5); got != "reply" {
			t.Fatalf("read %q", got)
		}
		if l.current() != net.Conn(c) {
			t.Fatal("not settled on the control connection")
		}
	})

	t.Run("past MaxEarlyData: settles first", func(t *testing.T) {
		c, p := unixPair(t)
		l := newLazyConn(c, n, future, true)
		defer l.Close()
		l.SetDeadline(time.Now().Add(5 * time.Second))
		l.early = make([]byte, MaxEarlyData-3)
		if _, err := l.Write([]byte("abc")); err != nil { // fits exactly: goes ahead
			t.Fatal(err)
		}
		p.SetDeadline(time.Now().Add(5 * time.Second))
		if got := readN(t, p, 3); got != "abc" {
			t.Fatalf("peer read %q", got)
		}
		done := make(chan error, 1)
		go func() { _, err := l.Write([]byte("d")); done <- err }()
		p.Write(ev) // the Write above may only go out after this
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := readN(t, p, 1); got != "d" {
			t.Fatalf("peer read %q", got)
		}
		if string(l.wrote) != "abc" {
			t.Fatalf("kept for a fallback: %q; the write past the limit must not go ahead", l.wrote)
		}
	})

	for _, gone := range []bool{false, true} {
		t.Run(map[bool]string{false: "declined: all of it to backend_pipe once", true: "connection gone mid-way: all of it to backend_pipe once"}[gone], func(t *testing.T) {
			pipe := startPipe(t)
			n := &wirepb.Negotiated{HandlePassedToken: n.HandlePassedToken, ConnectionId: 5, BackendPipe: pipe.path}
			c, p := unixPair(t)
			l := newLazyConn(c, n, future, true)
			defer l.Close()
			l.SetDeadline(time.Now().Add(5 * time.Second))
			l.early = []byte("early|")
			if _, err := l.Write([]byte("one|")); err != nil {
				t.Fatal(err)
			}
			if gone {
				p.Close() // nobody will read: the next write ahead fails on the socket
			}
			if _, err := l.Write([]byte("two")); err != nil {
				t.Fatal(err)
			}
			if l.aheadLost != gone {
				t.Fatalf("write ahead found the connection gone: %v, want %v", l.aheadLost, gone)
			}
			if !gone {
				p.Close() // declined: closed unread
			}
			if got := readN(t, l, 4); got != "pipe" {
				t.Fatalf("read %q, want backend_pipe's greeting", got)
			}
			l.CloseWrite()
			testutil.WaitFor(t, "backend_pipe received", func() bool { return len(pipe.received()) == 1 })
			if got := pipe.received(); got[0] != "early|one|two" {
				t.Fatalf("backend_pipe got %q, want the early data and the writes once, in order", got)
			}
		})
	}
}

// A write ahead on a closed connection fails as on any closed connection.
func TestLazyConnWriteAheadClosed(t *testing.T) {
	n := &wirepb.Negotiated{HandlePassedToken: []byte("0123456789abcdef"), ConnectionId: 5}
	c, _ := unixPair(t)
	l := newLazyConn(c, n, time.Now().Add(10*time.Second), true)
	l.Close()
	if k, err := l.Write([]byte("x")); k != 0 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %d, %v; want net.ErrClosed", k, err)
	}
}
