package identity

import (
	"errors"
	"fmt"
	"net"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// ErrNotProbe is returned by Answer for a frame that is not an identity probe.
var ErrNotProbe = errors.New("frame is not a v1 identity probe")

// IsProbe reports whether f is a v1 identity probe: a v1 REQUEST on 0xB232 carrying a
// 32-byte nonce.
func IsProbe(f *wirepb.Frame) bool {
	return f != nil &&
		f.EnvelopeVersion == wire.ProtocolVersion &&
		f.Kind == wirepb.FrameKind_REQUEST &&
		f.PayloadProtocol == wire.ProtoIdentity &&
		len(f.Payload) == NonceLen
}

// Answer writes the backend's reply to the probe req: a RESPONSE echoing request_id (and
// trace fields) whose payload is the nonce followed by self. The caller owns deadlines.
func Answer(conn net.Conn, req *wirepb.Frame, self *wirepb.DaemonProcess) error {
	if !IsProbe(req) {
		return fmt.Errorf("identity answer: %w", ErrNotProbe)
	}
	body, err := wire.Marshal(self)
	if err != nil {
		return fmt.Errorf("identity answer: encode: %w", err)
	}
	payload := make([]byte, 0, len(req.Payload)+len(body))
	payload = append(append(payload, req.Payload...), body...)
	if err := wire.WriteFrame(conn, wire.ReplyFrame(req, wire.ProtoIdentity, payload)); err != nil {
		return fmt.Errorf("identity answer: %w", err)
	}
	return nil
}
