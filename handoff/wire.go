package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

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
	if !utf8.ValidString(service) {
		return nil, fmt.Errorf("encode HandoffOffer: service name is not valid UTF-8")
	}
	payload := wire.AppendOffer(make([]byte, 0, 64+len(service)), &wire.Offer{Token: token, Service: service,
		CorrelationID: correlationID, Unknown: appendExt(nil, ext.RelayConnID, ext)})
	return wire.AppendEnvelope(make([]byte, 0, 32+len(payload)), wirepb.FrameKind_REQUEST, wire.ProtoHandoff, correlationID, payload), nil
}

// Offer is a decoded offer frame: the v1 fields, the frame's request id (which the ack
// echoes) and the extensions the broker offered.
type Offer struct {
	wire.Offer
	RequestID uint64
	Ext       Ext
}

// ParseOffer checks the envelope of an offer frame body and decodes its payload.
func ParseOffer(body []byte) (Offer, error) {
	f, err := wire.ParseEnvelope(body)
	if err != nil {
		return Offer{}, fmt.Errorf("offer: %w", err)
	}
	if f.Version != wire.ProtocolVersion || f.Kind != wirepb.FrameKind_REQUEST ||
		f.Protocol != wire.ProtoHandoff || f.Encoding != wirepb.PayloadEncoding_NONE {
		return Offer{}, fmt.Errorf("offer: %w", ErrNotHandoff)
	}
	o, err := wire.ParseOffer(f.Payload)
	if err != nil {
		return Offer{}, fmt.Errorf("offer: %w", err)
	}
	relay, ext := parseExt(o.Unknown)
	ext.RelayConnID = relay
	return Offer{Offer: o, RequestID: f.RequestID, Ext: ext}, nil
}

// AckFrame encodes a framed HandoffAck of the given kind: RESPONSE from the backend to
// the broker, EVENT from the broker to the client (the handoff-ready relay).
func AckFrame(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck) ([]byte, error) {
	return AckFrameExt(kind, requestID, ack, Ext{})
}

// AckFrameExt is AckFrame with the backend's extension answers (ext.go).
func AckFrameExt(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck, ext Ext) ([]byte, error) {
	if !utf8.ValidString(ack.ErrorDetail) {
		return nil, fmt.Errorf("encode HandoffAck: error detail is not valid UTF-8")
	}
	relay := uint64(0)
	if ext.Relayed {
		relay = 1
	}
	payload := wire.AppendAck(make([]byte, 0, 48+len(ack.ErrorDetail)), &wire.Ack{Token: ack.Token, Accepted: ack.Accepted,
		Detail: ack.ErrorDetail, CorrelationID: ack.CorrelationId, Unknown: appendExt(nil, relay, ext)})
	return wire.AppendEnvelope(make([]byte, 0, 32+len(payload)), kind, wire.ProtoHandoff, requestID, payload), nil
}

// ParseAck decodes a HandoffAck frame body of the wanted kind and checks token and
// correlation; it returns ErrNotAccepted (with the backend's detail) for a refusal.
func ParseAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) error {
	_, err := ParseAckExt(body, kind, token, correlationID)
	return err
}

// ParseAckExt is ParseAck that also returns the backend's extension answers.
func ParseAckExt(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (Ext, error) {
	ack, err := parseAck(body, kind, token, correlationID)
	if err != nil {
		return Ext{}, err
	}
	relayed, ext := parseExt(ack.Unknown)
	ext.Relayed = relayed == 1
	return ext, nil
}

func parseAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (wire.Ack, error) {
	ack, err := decodeAck(body, kind, token, correlationID)
	if err == nil && !ack.Accepted {
		err = fmt.Errorf("%w: %s", ErrNotAccepted, ack.Detail)
	}
	return ack, err
}

// decodeAck decodes an ack and checks all but accepted.
func decodeAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (wire.Ack, error) {
	f, err := wire.ParseEnvelope(body)
	if err != nil {
		return wire.Ack{}, fmt.Errorf("%w: %w", ErrMalformedAck, err)
	}
	if f.Kind != kind || f.Protocol != wire.ProtoHandoff || f.Encoding != wirepb.PayloadEncoding_NONE {
		return wire.Ack{}, fmt.Errorf("ack: %s 0x%04X: %w", f.Kind, f.Protocol, ErrNotHandoff)
	}
	ack, err := wire.ParseAck(f.Payload)
	if err != nil {
		return wire.Ack{}, fmt.Errorf("%w: %w", ErrMalformedAck, err)
	}
	switch {
	case !bytes.Equal(ack.Token, token):
		return wire.Ack{}, ErrTokenMatch
	case ack.CorrelationID != correlationID:
		return wire.Ack{}, fmt.Errorf("got %d, want %d: %w", ack.CorrelationID, correlationID, ErrCorrelation)
	}
	return ack, nil
}
