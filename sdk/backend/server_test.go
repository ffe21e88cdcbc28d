package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

func newServer(t *testing.T, o backend.Options) (*backend.Server, string) {
	t.Helper()
	if o.Endpoint == "" {
		o.Endpoint = filepath.Join(testutil.ShortDir(t), "be.sock")
	}
	srv, err := backend.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return srv, o.Endpoint
}

func TestProbeAnsweredWithRealIdentity(t *testing.T) {
	srv, ep := newServer(t, backend.Options{})
	var handled atomic.Int32
	serve(t, srv, func(ctx context.Context, c net.Conn) { handled.Add(1) })

	var h identity.Hasher
	for range 3 {
		got, err := identity.ProbeAndVerify(context.Background(), ep, &h, 0)
		if err != nil {
			t.Fatal(err)
		}
		if int(got.Pid) != os.Getpid() || got.IpcEndpoint.GetPath() != ep {
			t.Fatalf("identity %v", got)
		}
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("%d probes reached the handler", n)
	}
	fi, err := os.Stat(ep)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

// Every byte a data client sends reaches the handler, including a leading 0x01 and whole
// v1 frames that are not probes.
func TestDataBytesIntact(t *testing.T) {
	srv, ep := newServer(t, backend.Options{PeekTimeout: 50 * time.Millisecond})
	serve(t, srv, echo)

	frame := func(kind wirepb.FrameKind, protocol uint32, payload []byte) []byte {
		b, err := wire.EncodeFrame(wire.NewFrame(kind, protocol, 7, payload))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	huge := append([]byte{0x01, 0xFF, 0xFF, 0xFF, 0x00}, big...)
	cases := map[string][]byte{
		"text":                     []byte("hello backend\n"),
		"single framing byte":      {0x01},
		"partial header":           {0x01, 0x10, 0x00},
		"header then short body":   {0x01, 0x40, 0, 0, 0, 0x08, 0x01},
		"control-plane frame":      frame(wirepb.FrameKind_REQUEST, wire.ProtoControl, []byte("hello")),
		"identity RESPONSE frame":  frame(wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, make([]byte, 32)),
		"probe with 8-byte nonce":  frame(wirepb.FrameKind_REQUEST, wire.ProtoIdentity, make([]byte, 8)),
		"undecodable small frame":  {0x01, 0x02, 0, 0, 0, 0xFF, 0xFF},
		"declared body over cap":   huge,
		"1 MiB of data":            big,
		"empty (client sends EOF)": {},
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			if got := testutil.RoundTrip(t, ep, payload); !bytes.Equal(got, payload) {
				t.Fatalf("echoed %d bytes, want %d (first %x)", len(got), len(payload), got[:min(len(got), 16)])
			}
		})
	}
}

// A client that waits for the server to speak first reaches the handler after the peek
// timeout, and bytes it sent before that are still delivered.
func TestServerSpeaksFirst(t *testing.T) {
	const peek = 50 * time.Millisecond
	srv, ep := newServer(t, backend.Options{PeekTimeout: peek})
	serve(t, srv, func(ctx context.Context, c net.Conn) {
		if _, err := c.Write([]byte("G")); err == nil {
			echo(ctx, c)
		}
	})
	for _, early := range [][]byte{nil, {0x01}, {0x01, 0x05, 0, 0}} {
		c, err := net.Dial("unix", ep)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		if _, err := c.Write(early); err != nil {
			t.Fatal(err)
		}
		g := make([]byte, 1)
		if _, err := io.ReadFull(c, g); err != nil || g[0] != 'G' {
			t.Fatalf("greeting %q: %v", g, err)
		}
		if d := time.Since(start); d < peek || d > peek+2*time.Second {
			t.Fatalf("greeting after %v, want about %v", d, peek)
		}
		rest := []byte("rest")
		if _, err := c.Write(rest); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.UnixConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, append(append([]byte{}, early...), rest...)) {
			t.Fatalf("early %x: echoed %x: %v", early, got, err)
		}
	}
}

// Connections are served concurrently: n handlers must all be inside at the same time.
func TestConcurrentConnections(t *testing.T) {
	const n = 16
	srv, ep := newServer(t, backend.Options{})
	var inside atomic.Int32
	all := make(chan struct{})
	serve(t, srv, func(ctx context.Context, c net.Conn) {
		if inside.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			_, _ = c.Write([]byte("ok"))
		case <-ctx.Done():
		}
	})
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("unix", ep)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		if b, err := io.ReadAll(c); err != nil || string(b) != "ok" {
			t.Fatalf("got %q: %v", b, err)
		}
	}
}

// Serve returns after cancellation only once handlers returned; a handler that ignores ctx
// has its connection closed after the grace period. A bound socket is removed.
func TestServeShutdown(t *testing.T) {
	srv, ep := newServer(t, backend.Options{Grace: 50 * time.Millisecond})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	var returned atomic.Int32
	entered := make(chan struct{}, 2)
	handler := func(ctx context.Context, c net.Conn) {
		defer returned.Add(1)
		entered <- struct{}{}
		if _, err := c.Read(make([]byte, 1)); err == nil { // the first byte: "x" or "c"
			_, _ = c.Read(make([]byte, 1)) // ignores ctx: only a close gets it out
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, handler) }()

	for range 2 {
		c, err := net.Dial("unix", ep)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		<-entered
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := returned.Load(); n != 2 {
		t.Fatalf("Serve returned with %d of 2 handlers done", n)
	}
	if _, err := os.Stat(ep); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	if err := srv.Serve(context.Background(), echo); err == nil {
		t.Fatal("second Serve succeeded")
	}
}

func TestBindRules(t *testing.T) {
	dir := testutil.ShortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	live := filepath.Join(dir, "live.sock")
	liveLn, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLn.Close()

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, wantErr string
	}{
		{"stale socket replaced", stale, ""},
		{"live socket refused", live, "in use by another process"},
		{"regular file refused", regular, "not a socket"},
		{"path too long", "/tmp/" + strings.Repeat("x", 120) + ".sock", "at most 107"},
		{"missing dir", filepath.Join(dir, "no", "be.sock"), "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := backend.New(backend.Options{Endpoint: tc.path})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			err = srv.Listen()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat(regular); err != nil {
		t.Fatalf("regular file touched: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := backend.New(backend.Options{}); err == nil {
		t.Fatal("no endpoint accepted")
	}
}
