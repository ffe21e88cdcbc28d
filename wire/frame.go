// Package wire implements the framing of the running-process broker v1 protocol and the
// constants every peer must agree on: payload protocols, caps and refusal reasons.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	// FramingVersion is the first byte of every frame.
	FramingVersion byte = 0x01
	// HeaderLen is the framing byte plus the u32 little-endian body length.
	HeaderLen = 5
	// MaxFrameBody caps any frame body.
	MaxFrameBody = 16 << 20
	// MaxHelloBody caps the body of the initial Hello frame.
	MaxHelloBody = 64 << 10
	// ProtocolVersion is the envelope and Hello protocol version.
	ProtocolVersion = 1
)

// Payload protocols carried in Frame.payload_protocol.
const (
	ProtoControl  uint32 = 0x0000
	ProtoAdmin    uint32 = 0xAD01
	ProtoIdentity uint32 = 0xB232
	ProtoHandoff  uint32 = 0xD0FF
)

// CapHandlePassing is capability bit 0, the only defined bit.
const CapHandlePassing uint64 = 0x1

// CapEarlyData is capability bit 1, ours (not in v1; v1 peers ignore unknown bits): the
// client's first data bytes follow its Hello frame on the control connection, unread by
// the broker; the broker grants the bit only with a handoff to a backend that writes the
// handoff-ready EVENT before it reads, and otherwise issues no token at all.
const CapEarlyData uint64 = 0x2

// CapWriteAhead is capability bit 2, ours: the client may write on the control
// connection after Negotiated, before the handoff-ready EVENT, as if it were early data
// (nothing follows its Hello in the same write). The broker grants it as it grants bit
// 1, only with a token to a backend proven to write the EVENT before it reads; unlike
// bit 1, a client it cannot grant still gets a plain token.
const CapWriteAhead uint64 = 0x4

// Typed framing failures, matchable with errors.Is.
var (
	ErrFramingVersion = errors.New("unsupported framing version")
	ErrTooLarge       = errors.New("frame body exceeds the cap")
	ErrHeaderEOF      = errors.New("connection closed inside the frame header")
	ErrBodyEOF        = errors.New("connection closed inside the frame body")
)

// FrameError carries the detail of a framing failure; Unwrap yields one of the Err values.
type FrameError struct {
	Kind     error
	Declared uint32 // the declared body length, for ErrTooLarge and ErrBodyEOF
	Cap      uint32
	Err      error // underlying I/O error, if any
}

func (e *FrameError) Error() string {
	switch {
	case errors.Is(e.Kind, ErrTooLarge):
		return fmt.Sprintf("%v: declared %d bytes, cap %d", e.Kind, e.Declared, e.Cap)
	case e.Err != nil:
		return fmt.Sprintf("%v: %v", e.Kind, e.Err)
	}
	return e.Kind.Error()
}

func (e *FrameError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// ReadFrameBody reads one frame and returns its raw body. The declared length is checked
// against maxBody before anything is allocated.
func ReadFrameBody(r io.Reader, maxBody uint32) ([]byte, error) {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, &FrameError{Kind: ErrHeaderEOF, Err: err}
	}
	n, err := ParseHeader(hdr[:], maxBody)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, &FrameError{Kind: ErrBodyEOF, Declared: n, Err: err}
	}
	return body, nil
}

// ReadFrame reads and decodes one Frame capped at maxBody.
func ReadFrame(r io.Reader, maxBody uint32) (*wirepb.Frame, error) {
	body, err := ReadFrameBody(r, maxBody)
	if err != nil {
		return nil, err
	}
	f := new(wirepb.Frame)
	if err := proto.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return f, nil
}

// AppendFrame appends the framed encoding of body to dst.
func AppendFrame(dst, body []byte) []byte {
	dst = append(dst, FramingVersion)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// Marshal encodes m deterministically (fields ascending, maps sorted).
func Marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// EncodeFrame encodes f and frames it.
func EncodeFrame(f *wirepb.Frame) ([]byte, error) {
	body, err := Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode frame: %w", err)
	}
	if len(body) > MaxFrameBody {
		return nil, &FrameError{Kind: ErrTooLarge, Declared: uint32(len(body)), Cap: MaxFrameBody}
	}
	return AppendFrame(make([]byte, 0, HeaderLen+len(body)), body), nil
}

// WriteFrame encodes f and writes it with a single Write call.
func WriteFrame(w io.Writer, f *wirepb.Frame) error {
	b, err := EncodeFrame(f)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// NewFrame builds a v1 envelope around an encoded payload.
func NewFrame(kind wirepb.FrameKind, protocol uint32, requestID uint64, payload []byte) *wirepb.Frame {
	return &wirepb.Frame{
		EnvelopeVersion: ProtocolVersion,
		Kind:            kind,
		PayloadProtocol: protocol,
		Payload:         payload,
		RequestId:       requestID,
	}
}

// NewMessageFrame marshals m and wraps it in a frame.
func NewMessageFrame(kind wirepb.FrameKind, protocol uint32, requestID uint64, m proto.Message) (*wirepb.Frame, error) {
	payload, err := Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return NewFrame(kind, protocol, requestID, payload), nil
}
