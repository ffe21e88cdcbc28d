package handoff

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// offerPrefix is an explicit handle_value = 0 (field 1, varint 0). v1 brokers write it
// even though proto3 would omit it; v1 backends may rely on the exact bytes.
var offerPrefix = []byte{0x08, 0x00}

// maxControlBody caps the body of an offer or ack frame; both are a few dozen bytes.
const maxControlBody = 64 << 10

// Typed ack and offer problems, matchable with errors.Is.
var (
	ErrNotHandoff   = errors.New("frame is not a 0xD0FF handoff frame of the expected kind")
	ErrTokenMatch   = errors.New("handoff token does not match")
	ErrCorrelation  = errors.New("handoff correlation_id does not match")
	ErrNotAccepted  = errors.New("backend declined the handoff")
	ErrMalformedAck = errors.New("malformed HandoffAck")
)

// OfferFrame encodes the framed REQUEST carrying HandoffOffer, with v1's explicit
// handle_value 0 in front of the payload.
func OfferFrame(token []byte, service string, correlationID uint64) ([]byte, error) {
	return OfferFrameExt(token, service, correlationID, Ext{})
}

// OfferFrameExt is OfferFrame with our extensions (ext.go) appended after the v1 fields.
func OfferFrameExt(token []byte, service string, correlationID uint64, ext Ext) ([]byte, error) {
	o := &wirepb.HandoffOffer{Token: token, ServiceName: service, CorrelationId: correlationID}
	setExt(o, ext.RelayConnID, ext.Reuse, ext.Probe)
	body, err := wire.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode HandoffOffer: %w", err)
	}
	payload := append(append(make([]byte, 0, len(offerPrefix)+len(body)), offerPrefix...), body...)
	return wire.EncodeFrame(wire.NewFrame(wirepb.FrameKind_REQUEST, wire.ProtoHandoff, correlationID, payload))
}

// DecodeOffer checks the envelope of an offer frame and decodes its payload.
func DecodeOffer(f *wirepb.Frame) (*wirepb.HandoffOffer, error) {
	o, _, err := DecodeOfferExt(f)
	return o, err
}

// DecodeOfferExt is DecodeOffer that also returns the extensions the broker offered.
func DecodeOfferExt(f *wirepb.Frame) (*wirepb.HandoffOffer, Ext, error) {
	o, err := decodeOffer(f)
	if err != nil {
		return nil, Ext{}, err
	}
	relay, reuse, probe := getExt(o)
	return o, Ext{RelayConnID: relay, Reuse: reuse, Probe: probe}, nil
}

func decodeOffer(f *wirepb.Frame) (*wirepb.HandoffOffer, error) {
	if f.EnvelopeVersion != wire.ProtocolVersion || f.Kind != wirepb.FrameKind_REQUEST ||
		f.PayloadProtocol != wire.ProtoHandoff || f.PayloadEncoding != wirepb.PayloadEncoding_NONE {
		return nil, fmt.Errorf("offer: %w", ErrNotHandoff)
	}
	o := new(wirepb.HandoffOffer)
	if err := proto.Unmarshal(f.Payload, o); err != nil {
		return nil, fmt.Errorf("offer: decode HandoffOffer: %w", err)
	}
	return o, nil
}

// AckFrame encodes a framed HandoffAck of the given kind: RESPONSE from the backend to
// the broker, EVENT from the broker to the client (the handoff-ready relay).
func AckFrame(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck) ([]byte, error) {
	return AckFrameExt(kind, requestID, ack, Ext{})
}

// AckFrameExt is AckFrame with the backend's extension answers (ext.go).
func AckFrameExt(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck, ext Ext) ([]byte, error) {
	if ext.Relayed || ext.Reuse || ext.Probe {
		ack = proto.Clone(ack).(*wirepb.HandoffAck)
		relay := uint64(0)
		if ext.Relayed {
			relay = 1
		}
		setExt(ack, relay, ext.Reuse, ext.Probe)
	}
	payload, err := wire.Marshal(ack)
	if err != nil {
		return nil, fmt.Errorf("encode HandoffAck: %w", err)
	}
	return wire.EncodeFrame(wire.NewFrame(kind, wire.ProtoHandoff, requestID, payload))
}

// ParseAck decodes a HandoffAck frame body of the wanted kind and checks token and
// correlation; it returns ErrNotAccepted (with the backend's detail) for a refusal.
func ParseAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) error {
	_, err := ParseAckExt(body, kind, token, correlationID)
	return err
}

// ParseAckExt is ParseAck that also returns the backend's extension answers.
func ParseAckExt(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (Ext, error) {
	var ack wirepb.HandoffAck
	if err := parseAck(body, kind, token, correlationID, &ack); err != nil {
		return Ext{}, err
	}
	relayed, reuse, probe := getExt(&ack)
	return Ext{Relayed: relayed == 1, Reuse: reuse, Probe: probe}, nil
}

func parseAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64, ack *wirepb.HandoffAck) error {
	if err := decodeAck(body, kind, token, correlationID, ack); err != nil {
		return err
	}
	if !ack.Accepted {
		return fmt.Errorf("%w: %s", ErrNotAccepted, ack.ErrorDetail)
	}
	return nil
}

// decodeAck decodes an ack and checks all but accepted.
func decodeAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64, ack *wirepb.HandoffAck) error {
	var f wirepb.Frame
	if err := proto.Unmarshal(body, &f); err != nil {
		return fmt.Errorf("%w: frame: %w", ErrMalformedAck, err)
	}
	if f.Kind != kind || f.PayloadProtocol != wire.ProtoHandoff || f.PayloadEncoding != wirepb.PayloadEncoding_NONE {
		return fmt.Errorf("ack: %s 0x%04X: %w", f.Kind, f.PayloadProtocol, ErrNotHandoff)
	}
	if err := proto.Unmarshal(f.Payload, ack); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedAck, err)
	}
	switch {
	case !bytes.Equal(ack.Token, token):
		return ErrTokenMatch
	case ack.CorrelationId != correlationID:
		return fmt.Errorf("got %d, want %d: %w", ack.CorrelationId, correlationID, ErrCorrelation)
	}
	return nil
}
