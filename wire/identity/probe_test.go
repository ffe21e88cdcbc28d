package identity_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// fakeBackend is an in-process test peer: for each connection it reads the probe and
// writes whatever respond returns (nil: nothing). Being in-process, SO_PEERCRED names us.
func fakeBackend(t *testing.T, respond func(conn net.Conn, req *wirepb.Frame)) string {
	t.Helper()
	ep := filepath.Join(testutil.ShortDir(t), "fake.sock")
	fakeBackendAt(t, ep, respond)
	return ep
}

func fakeBackendAt(t testing.TB, ep string, respond func(conn net.Conn, req *wirepb.Frame)) {
	t.Helper()
	ln, err := net.Listen("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if req, err := wire.ReadFrame(conn, wire.MaxHelloBody); err == nil {
				respond(conn, req)
			}
			conn.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

func write(conn net.Conn, kind wirepb.FrameKind, protocol uint32, reqID uint64, payload []byte) {
	_ = wire.WriteFrame(conn, wire.NewFrame(kind, protocol, reqID, payload))
}

func encode(t *testing.T, p *wirepb.DaemonProcess) []byte {
	b, err := wire.Marshal(p)
	if err != nil {
		t.Error(err)
	}
	return b
}

func TestProbeChecks(t *testing.T) {
	const mismatchText = "endpoint probe response identity did not match expected daemon identity: "
	legacy := append([]byte{0x1A, 0x20}, make([]byte, 32)...)
	type answerFunc func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess)
	// reply answers correctly after letting mutate change the identity.
	reply := func(mutate func(p *wirepb.DaemonProcess)) answerFunc {
		return func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			p := proto.Clone(self).(*wirepb.DaemonProcess)
			mutate(p)
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId, append(req.Payload, encode(t, p)...))
		}
	}
	keep := func(*wirepb.DaemonProcess) {}
	cases := []struct {
		name     string
		answer   answerFunc
		want     error
		mismatch string // field named by a *MismatchError
	}{
		{name: "good", answer: reply(keep)},
		{name: "legacy trailing sha256 accepted", answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			payload := append(append(append([]byte{}, req.Payload...), encode(t, self)...), legacy...)
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId, payload)
		}},
		{name: "answer via Answer", answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			if err := identity.Answer(conn, req, self); err != nil {
				t.Error(err)
			}
		}},
		{name: "wrong kind", want: identity.ErrKind, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			write(conn, wirepb.FrameKind_EVENT, wire.ProtoIdentity, req.RequestId, append(req.Payload, encode(t, self)...))
		}},
		{name: "wrong protocol", want: identity.ErrProtocol, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoAdmin, req.RequestId, append(req.Payload, encode(t, self)...))
		}},
		{name: "wrong request_id", want: identity.ErrRequestID, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId+1, append(req.Payload, encode(t, self)...))
		}},
		{name: "wrong nonce echo", want: identity.ErrNonce, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			nonce := append([]byte{}, req.Payload...)
			nonce[31] ^= 0xFF
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId, append(nonce, encode(t, self)...))
		}},
		{name: "payload shorter than nonce", want: identity.ErrNonce, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId, req.Payload[:16])
		}},
		{name: "undecodable identity", want: identity.ErrMalformed, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			write(conn, wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, req.RequestId, append(req.Payload, 0xFF, 0xFF))
		}},
		{name: "bad framing byte", want: identity.ErrMalformed, answer: func(t *testing.T, conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) {
			_, _ = conn.Write([]byte{0x02, 0, 0, 0, 0})
		}},
		{name: "closed without answer", want: identity.ErrNoResponse, answer: func(*testing.T, net.Conn, *wirepb.Frame, *wirepb.DaemonProcess) {}},
		{name: "wrong algorithm", want: identity.ErrAlgorithm, answer: reply(func(p *wirepb.DaemonProcess) { p.ExeHashAlgorithm = "sha256" })},
		{name: "short hash", want: identity.ErrHashLength, answer: reply(func(p *wirepb.DaemonProcess) { p.ExeHash = p.ExeHash[:16] })},
		{name: "pid mismatch", mismatch: "pid", answer: reply(func(p *wirepb.DaemonProcess) { p.Pid++ })},
		{name: "exe path mismatch", mismatch: "exe_path", answer: reply(func(p *wirepb.DaemonProcess) { p.ExePath += ".old" })},
		{name: "exe hash mismatch", mismatch: "exe_hash", answer: reply(func(p *wirepb.DaemonProcess) { p.ExeHash[0] ^= 1 })},
		{name: "boot id mismatch", mismatch: "boot_id", answer: reply(func(p *wirepb.DaemonProcess) { p.BootId = "00000000-0000-0000-0000-000000000000" })},
		{name: "endpoint mismatch", mismatch: "ipc_endpoint", answer: reply(func(p *wirepb.DaemonProcess) { p.IpcEndpoint.Path = "/tmp/elsewhere.sock" })},
		{name: "pid and hash mismatch names pid", mismatch: "pid", answer: reply(func(p *wirepb.DaemonProcess) { p.Pid++; p.ExeHash[0] ^= 1 })},
	}
	var h identity.Hasher
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := filepath.Join(testutil.ShortDir(t), "fake.sock")
			self, err := h.Self(ep)
			if err != nil {
				t.Fatal(err)
			}
			fakeBackendAt(t, ep, func(conn net.Conn, req *wirepb.Frame) { tc.answer(t, conn, req, self) })
			got, err := identity.ProbeAndVerify(context.Background(), ep, &h, 0)
			switch {
			case tc.mismatch != "":
				var me *identity.MismatchError
				if !errors.As(err, &me) || me.Field != tc.mismatch || !errors.Is(err, identity.ErrMismatch) {
					t.Fatalf("error %v, want mismatch on %s", err, tc.mismatch)
				}
				if !strings.HasSuffix(err.Error(), mismatchText+tc.mismatch) {
					t.Fatalf("error text %q", err)
				}
			case tc.want != nil:
				mustIs(t, err, tc.want)
			case err != nil:
				t.Fatal(err)
			case !proto.Equal(got, self):
				t.Fatalf("got %v, want %v", got, self)
			}
		})
	}
}

func TestProbeDeadlines(t *testing.T) {
	// A silent backend reads the probe and never answers.
	silent := func(conn net.Conn, _ *wirepb.Frame) { _, _ = io.Copy(io.Discard, conn) }
	ep := fakeBackend(t, silent)

	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := identity.Probe(ctx, ep)
		mustIs(t, err, identity.ErrNoResponse)
		mustIs(t, err, os.ErrDeadlineExceeded)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("default deadline", func(t *testing.T) {
		start := time.Now()
		_, err := identity.Probe(context.Background(), ep)
		mustIs(t, err, os.ErrDeadlineExceeded)
		if d := time.Since(start); d < identity.DefaultTimeout || d > identity.DefaultTimeout+2*time.Second {
			t.Fatalf("took %v, want about %v", d, identity.DefaultTimeout)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ep := fakeBackend(t, func(conn net.Conn, req *wirepb.Frame) {
			cancel() // the probe is in flight and waiting for us
			silent(conn, req)
		})
		_, err := identity.Probe(ctx, ep)
		mustIs(t, err, identity.ErrNoResponse)
	})
	t.Run("unreachable", func(t *testing.T) {
		_, err := identity.Probe(context.Background(), filepath.Join(testutil.ShortDir(t), "none.sock"))
		mustIs(t, err, identity.ErrUnreachable)
	})
}

func TestCheckConnect(t *testing.T) {
	ep := fakeBackend(t, func(net.Conn, *wirepb.Frame) {})
	if pid, err := identity.CheckConnect(context.Background(), ep); err != nil || pid != os.Getpid() {
		t.Fatalf("CheckConnect = %d, %v; want our pid %d", pid, err, os.Getpid())
	}
	_, err := identity.CheckConnect(context.Background(), filepath.Join(testutil.ShortDir(t), "none.sock"))
	mustIs(t, err, identity.ErrUnreachable)
}

func TestAnswerRejectsNonProbe(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cases := map[string]*wirepb.Frame{
		"nil":         nil,
		"response":    wire.NewFrame(wirepb.FrameKind_RESPONSE, wire.ProtoIdentity, 1, make([]byte, 32)),
		"admin":       wire.NewFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, 1, make([]byte, 32)),
		"short nonce": wire.NewFrame(wirepb.FrameKind_REQUEST, wire.ProtoIdentity, 1, make([]byte, 8)),
		"envelope 2":  {EnvelopeVersion: 2, PayloadProtocol: wire.ProtoIdentity, Payload: make([]byte, 32)},
	}
	for name, f := range cases {
		mustIs(t, identity.Answer(a, f, &wirepb.DaemonProcess{}), identity.ErrNotProbe)
		if identity.IsProbe(f) {
			t.Errorf("%s: IsProbe true", name)
		}
	}
}
