package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Hand-written codecs for the small frames of the handoff path: the Frame envelope,
// HandoffOffer and HandoffAck. Each handoff encodes and decodes half a dozen of them
// across broker, backend and client; through protobuf-go's reflection that cost more
// CPU than the exchange's system calls, and its deep call chains grew the stacks of
// fresh goroutines (a stack copy per handoff). These encoders produce the bytes
// proto.Marshal produces (fields in number order, zero values omitted, unknown fields
// last), and the decoders accept what proto.Unmarshal accepts, with the same results:
// the last of a repeated scalar wins, a known field with the wrong wire type is kept as
// unknown, string fields must be valid UTF-8. codec_test.go checks both against
// protobuf-go, also by fuzzing.

// ErrMalformed: the bytes are not a valid protobuf encoding of the message.
var ErrMalformed = errors.New("malformed protobuf message")

// Envelope is a decoded Frame; Payload aliases the decoded bytes.
type Envelope struct {
	Version   uint32
	Kind      wirepb.FrameKind
	Protocol  uint32
	Payload   []byte
	RequestID uint64
	Encoding  wirepb.PayloadEncoding
}

// Offer is a HandoffOffer; Unknown holds the fields v1 does not define, raw.
type Offer struct {
	HandleValue   uint64
	Token         []byte
	Service       string
	CorrelationID uint64
	Unknown       []byte
}

// Ack is a HandoffAck; Unknown holds the fields v1 does not define, raw.
type Ack struct {
	Token         []byte
	Accepted      bool
	Detail        string
	CorrelationID uint64
	Unknown       []byte
}

// AppendEnvelope appends the framed encoding (header and body) of a Frame with envelope
// version 1 and these fields, as EncodeFrame(NewFrame(...)) would.
func AppendEnvelope(dst []byte, kind wirepb.FrameKind, protocol uint32, requestID uint64, payload []byte) []byte {
	n := sizeVarint(1, ProtocolVersion) + sizeVarint(2, uint64(kind)) + sizeVarint(3, uint64(protocol)) +
		sizeBytes(4, len(payload)) + sizeVarint(5, requestID)
	dst = binary.LittleEndian.AppendUint32(append(dst, FramingVersion), uint32(n))
	dst = appendVarint(dst, 1, ProtocolVersion)
	dst = appendVarint(dst, 2, uint64(kind))
	dst = appendVarint(dst, 3, uint64(protocol))
	dst = appendBytes(dst, 4, payload)
	return appendVarint(dst, 5, requestID)
}

// ParseEnvelope decodes a frame body (without the 5-byte header).
func ParseEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p, raw []byte) bool {
		switch {
		case num == 1 && typ == protowire.VarintType:
			e.Version = uint32(v)
		case num == 2 && typ == protowire.VarintType:
			e.Kind = wirepb.FrameKind(int32(v))
		case num == 3 && typ == protowire.VarintType:
			e.Protocol = uint32(v)
		case num == 4 && typ == protowire.BytesType:
			e.Payload = p
		case num == 5 && typ == protowire.VarintType:
			e.RequestID = v
		case num == 6 && typ == protowire.VarintType:
			e.Encoding = wirepb.PayloadEncoding(int32(v))
		case (num == 8 || num == 9) && typ == protowire.BytesType:
			return utf8.Valid(p)
		}
		return true
	})
	if err != nil {
		return Envelope{}, fmt.Errorf("frame: %w", err)
	}
	return e, nil
}

// AppendOffer appends the encoding of o. handle_value is always written, also when 0:
// v1 brokers write it explicitly and v1 backends may rely on the exact bytes.
func AppendOffer(dst []byte, o *Offer) []byte {
	dst = protowire.AppendTag(dst, 1, protowire.VarintType)
	dst = protowire.AppendVarint(dst, o.HandleValue)
	dst = appendBytes(dst, 2, o.Token)
	dst = appendBytes(dst, 3, []byte(o.Service))
	dst = appendVarint(dst, 4, o.CorrelationID)
	return append(dst, o.Unknown...)
}

// ParseOffer decodes a HandoffOffer payload; Token and Unknown alias b.
func ParseOffer(b []byte) (Offer, error) {
	var o Offer
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p, raw []byte) bool {
		switch {
		case num == 1 && typ == protowire.VarintType:
			o.HandleValue = v
		case num == 2 && typ == protowire.BytesType:
			o.Token = p
		case num == 3 && typ == protowire.BytesType:
			if !utf8.Valid(p) {
				return false
			}
			o.Service = string(p)
		case num == 4 && typ == protowire.VarintType:
			o.CorrelationID = v
		default:
			o.Unknown = append(protowire.AppendTag(o.Unknown, num, typ), raw...)
		}
		return true
	})
	if err != nil {
		return Offer{}, fmt.Errorf("HandoffOffer: %w", err)
	}
	return o, nil
}

// AppendAck appends the encoding of a.
func AppendAck(dst []byte, a *Ack) []byte {
	dst = appendBytes(dst, 1, a.Token)
	if a.Accepted {
		dst = appendVarint(dst, 2, 1)
	}
	dst = appendBytes(dst, 3, []byte(a.Detail))
	dst = appendVarint(dst, 4, a.CorrelationID)
	return append(dst, a.Unknown...)
}

// ParseAck decodes a HandoffAck payload; Token and Unknown alias b.
func ParseAck(b []byte) (Ack, error) {
	var a Ack
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, p, raw []byte) bool {
		switch {
		case num == 1 && typ == protowire.BytesType:
			a.Token = p
		case num == 2 && typ == protowire.VarintType:
			a.Accepted = v != 0
		case num == 3 && typ == protowire.BytesType:
			if !utf8.Valid(p) {
				return false
			}
			a.Detail = string(p)
		case num == 4 && typ == protowire.VarintType:
			a.CorrelationID = v
		default:
			a.Unknown = append(protowire.AppendTag(a.Unknown, num, typ), raw...)
		}
		return true
	})
	if err != nil {
		return Ack{}, fmt.Errorf("HandoffAck: %w", err)
	}
	return a, nil
}

// walk calls f for each field of b, in order: v is a varint's value, p a length-delimited
// field's bytes, raw the field's value as encoded, whatever its type (an unknown field
// is kept as its tag, re-encoded as protobuf-go does, and raw). f returns false to
// reject the message (invalid UTF-8).
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, p, raw []byte) bool) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d", ErrMalformed, num)
		}
		b = b[n:]
		field := b
		var v uint64
		var p []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			p, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		raw := field[:len(field)-len(b)+n]
		b = b[n:]
		if !f(num, typ, v, p, raw) {
			return fmt.Errorf("%w: field %d: invalid UTF-8", ErrMalformed, num)
		}
	}
	return nil
}

func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeBytes(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendVarint(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return protowire.AppendVarint(protowire.AppendTag(dst, num, protowire.VarintType), v)
}

func appendBytes(dst []byte, num protowire.Number, p []byte) []byte {
	if len(p) == 0 {
		return dst
	}
	return protowire.AppendBytes(protowire.AppendTag(dst, num, protowire.BytesType), p)
}
