package identity

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// DefaultTimeout bounds one probe attempt when the context has no deadline (v1).
const DefaultTimeout = 500 * time.Millisecond

// NonceLen is the length of the probe nonce (v1).
const NonceLen = 32

// maxResponse caps the probe answer; a DaemonProcess is a few hundred bytes.
const maxResponse = 64 << 10

// Typed probe failures, matchable with errors.Is. A failed identity comparison is a
// *MismatchError (ErrMismatch).
var (
	ErrUnreachable = errors.New("endpoint is unreachable")
	ErrPeerCred    = errors.New("peer credentials unavailable")
	ErrNoResponse  = errors.New("endpoint did not answer the identity probe")
	ErrMalformed   = errors.New("probe response is malformed")
	ErrKind        = errors.New("probe response kind is not RESPONSE")
	ErrProtocol    = errors.New("probe response payload_protocol is not 0xB232")
	ErrRequestID   = errors.New("probe response request_id does not echo the request")
	ErrNonce       = errors.New("probe response does not echo the nonce")
	ErrAlgorithm   = errors.New("probe response exe_hash_algorithm is not blake3")
	ErrHashLength  = errors.New("probe response exe_hash is not 32 bytes")
	ErrForeignUID  = errors.New("endpoint listener belongs to another user")
)

// Result is a decoded probe answer and the kernel's view of the peer. For a listener the
// broker bound and passed on, the peer is the broker itself.
type Result struct {
	Process *wirepb.DaemonProcess
	PeerPID int
	PeerUID int
}

// Probe runs one v1 identity probe against endpoint and checks the answer's envelope,
// nonce echo and hash fields. It does not compare the identity; see ProbeAndVerify.
func Probe(ctx context.Context, endpoint string) (Result, error) {
	conn, cred, cancel, err := dial(ctx, endpoint)
	if err != nil {
		return Result{}, err
	}
	defer cancel()
	defer conn.Close()

	var nonce [NonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return Result{}, fmt.Errorf("identity probe %s: nonce: %w", endpoint, err)
	}
	reqID := binary.LittleEndian.Uint64(nonce[:8])
	req := wire.NewFrame(wirepb.FrameKind_REQUEST, wire.ProtoIdentity, reqID, nonce[:])
	if err := wire.WriteFrame(conn, req); err != nil {
		return Result{}, fmt.Errorf("identity probe %s: %w: %w", endpoint, ErrNoResponse, err)
	}
	p, err := readAnswer(conn, reqID, nonce[:])
	if err != nil {
		return Result{}, fmt.Errorf("identity probe %s: %w", endpoint, err)
	}
	return Result{Process: p, PeerPID: int(cred.Pid), PeerUID: int(cred.Uid)}, nil
}

// readAnswer reads the RESPONSE and applies the v1 checks in order: kind, protocol,
// request_id, nonce echo, algorithm, hash length.
func readAnswer(r io.Reader, reqID uint64, nonce []byte) (*wirepb.DaemonProcess, error) {
	body, err := wire.ReadFrameBody(r, maxResponse)
	if err != nil {
		if errors.Is(err, wire.ErrFramingVersion) || errors.Is(err, wire.ErrTooLarge) {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrNoResponse, err)
	}
	var f wirepb.Frame
	if err := proto.Unmarshal(body, &f); err != nil {
		return nil, fmt.Errorf("%w: frame: %w", ErrMalformed, err)
	}
	switch {
	case f.Kind != wirepb.FrameKind_RESPONSE:
		return nil, fmt.Errorf("got %s: %w", f.Kind, ErrKind)
	case f.PayloadProtocol != wire.ProtoIdentity:
		return nil, fmt.Errorf("got 0x%04X: %w", f.PayloadProtocol, ErrProtocol)
	case f.RequestId != reqID:
		return nil, fmt.Errorf("got %d, want %d: %w", f.RequestId, reqID, ErrRequestID)
	case len(f.Payload) < len(nonce) || !bytes.Equal(f.Payload[:len(nonce)], nonce):
		return nil, ErrNonce
	}
	// Field 3 is reserved in our schema, so v1's trailing legacy SHA-256 (1A 20 + 32 bytes)
	// decodes as an unknown field; it is dropped rather than carried around.
	p := new(wirepb.DaemonProcess)
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(f.Payload[len(nonce):], p); err != nil {
		return nil, fmt.Errorf("%w: daemon process: %w", ErrMalformed, err)
	}
	switch {
	case p.ExeHashAlgorithm != HashAlgorithm:
		return nil, fmt.Errorf("got %q: %w", p.ExeHashAlgorithm, ErrAlgorithm)
	case len(p.ExeHash) != 32:
		return nil, fmt.Errorf("got %d bytes: %w", len(p.ExeHash), ErrHashLength)
	}
	return p, nil
}

// ProbeAndVerify probes endpoint and compares the answer with the identity the kernel
// reports for the serving process. expectPID 0 takes the pid from SO_PEERCRED (a
// registered backend that bound its own socket); a launcher passes its child's pid, since
// SO_PEERCRED names whoever called listen. The listener must run as our euid. h may be
// nil (no hash cache).
func ProbeAndVerify(ctx context.Context, endpoint string, h *Hasher, expectPID int) (*wirepb.DaemonProcess, error) {
	res, err := Probe(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	// Clients are sent to this endpoint: a process of another user must never pass.
	if res.PeerUID != os.Geteuid() {
		return nil, fmt.Errorf("identity probe %s: listener uid %d, ours %d: %w", endpoint, res.PeerUID, os.Geteuid(), ErrForeignUID)
	}
	pid := expectPID
	if pid == 0 {
		pid = res.PeerPID
	}
	want, err := h.OfPID(pid, endpoint)
	if err != nil {
		return nil, fmt.Errorf("identity probe %s: expected identity: %w", endpoint, err)
	}
	if err := Verify(res.Process, want); err != nil {
		return nil, fmt.Errorf("identity probe %s: %w", endpoint, err)
	}
	return res.Process, nil
}

// CheckConnect is the lighter check for backends that do not speak the probe: endpoint
// accepts a connection and the process that bound it runs as our effective uid. It
// returns that process's pid.
func CheckConnect(ctx context.Context, endpoint string) (int, error) {
	conn, cred, cancel, err := dial(ctx, endpoint)
	if err != nil {
		return 0, err
	}
	cancel()
	conn.Close()
	if int(cred.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("connect check %s: listener uid %d, ours %d: %w", endpoint, cred.Uid, os.Geteuid(), ErrForeignUID)
	}
	return int(cred.Pid), nil
}

// dial connects under ctx's deadline (DefaultTimeout if none) and reads SO_PEERCRED. The
// returned cancel releases the deadline context and the cancellation hook; it must be
// called once the connection is done.
func dial(ctx context.Context, endpoint string) (*net.UnixConn, *unix.Ucred, func(), error) {
	ctx, cancelCtx := withDefaultDeadline(ctx)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", endpoint)
	if err != nil {
		cancelCtx()
		return nil, nil, nil, fmt.Errorf("identity probe %s: %w: %w", endpoint, ErrUnreachable, err)
	}
	conn := c.(*net.UnixConn)
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// A cancelled ctx (not only an expired one) must also unblock reads and writes.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	cancel := func() { stop(); cancelCtx() }
	cred, err := PeerCred(conn)
	if err != nil {
		cancel()
		conn.Close()
		return nil, nil, nil, fmt.Errorf("identity probe %s: %w: %w", endpoint, ErrPeerCred, err)
	}
	return conn, cred, cancel, nil
}

func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
