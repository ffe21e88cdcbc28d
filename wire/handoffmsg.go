package wire

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/rpbroker/broker/wire/wirepb"
)

// The framed handoff messages both sides need: the broker sends offers and reads acks, a
// backend reads offers and writes acks (docs/protocol.md, "Handoff").

// MaxHandoffBody caps the body of an offer or ack frame; both are a few dozen bytes.
const MaxHandoffBody = 64 << 10

// Typed ack and offer problems, matchable with errors.Is.
var (
	ErrNotHandoff   = errors.New("frame is not a 0xD0FF handoff frame of the expected kind")
	ErrTokenMatch   = errors.New("handoff token does not match")
	ErrCorrelation  = errors.New("handoff correlation_id does not match")
	ErrNotAccepted  = errors.New("backend declined the handoff")
	ErrMalformedAck = errors.New("malformed HandoffAck")
)

// HandoffOfferFrame encodes the framed REQUEST carrying HandoffOffer, with v1's explicit
// handle_value 0 in front of the payload.
func HandoffOfferFrame(token []byte, service string, correlationID uint64) ([]byte, error) {
	return HandoffOfferFrameExt(token, service, correlationID, HandoffExt{})
}

// HandoffOfferFrameExt is HandoffOfferFrame with our extensions (handoffext.go) appended after the v1 fields.
func HandoffOfferFrameExt(token []byte, service string, correlationID uint64, ext HandoffExt) ([]byte, error) {
	if !utf8.ValidString(service) {
		return nil, fmt.Errorf("encode HandoffOffer: service name is not valid UTF-8")
	}
	payload := AppendOffer(make([]byte, 0, 64+len(service)), &Offer{Token: token, Service: service,
		CorrelationID: correlationID, Unknown: appendHandoffExt(nil, ext.RelayConnID, ext)})
	return AppendEnvelope(make([]byte, 0, 32+len(payload)), wirepb.FrameKind_REQUEST, ProtoHandoff, correlationID, payload), nil
}

// HandoffOffer is a decoded offer frame: the v1 fields, the frame's request id (which the ack
// echoes) and the extensions the broker offered.
type HandoffOffer struct {
	Offer
	RequestID uint64
	Ext       HandoffExt
}

// ParseHandoffOffer checks the envelope of an offer frame body and decodes its payload.
func ParseHandoffOffer(body []byte) (HandoffOffer, error) {
	f, err := ParseEnvelope(body)
	if err != nil {
		return HandoffOffer{}, fmt.Errorf("offer: %w", err)
	}
	if f.Version != ProtocolVersion || f.Kind != wirepb.FrameKind_REQUEST ||
		f.Protocol != ProtoHandoff || f.Encoding != wirepb.PayloadEncoding_NONE {
		return HandoffOffer{}, fmt.Errorf("offer: %w", ErrNotHandoff)
	}
	o, err := ParseOffer(f.Payload)
	if err != nil {
		return HandoffOffer{}, fmt.Errorf("offer: %w", err)
	}
	relay, ext := parseHandoffExt(o.Unknown)
	ext.RelayConnID = relay
	return HandoffOffer{Offer: o, RequestID: f.RequestID, Ext: ext}, nil
}

// HandoffAckFrame encodes a framed HandoffAck of the given kind: RESPONSE from the backend to
// the broker, EVENT from the broker to the client (the handoff-ready relay).
func HandoffAckFrame(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck) ([]byte, error) {
	return HandoffAckFrameExt(kind, requestID, ack, HandoffExt{})
}

// HandoffAckFrameExt is HandoffAckFrame with the backend's extension answers (handoffext.go).
func HandoffAckFrameExt(kind wirepb.FrameKind, requestID uint64, ack *wirepb.HandoffAck, ext HandoffExt) ([]byte, error) {
	if !utf8.ValidString(ack.ErrorDetail) {
		return nil, fmt.Errorf("encode HandoffAck: error detail is not valid UTF-8")
	}
	relay := uint64(0)
	if ext.Relayed {
		relay = 1
	}
	payload := AppendAck(make([]byte, 0, 48+len(ack.ErrorDetail)), &Ack{Token: ack.Token, Accepted: ack.Accepted,
		Detail: ack.ErrorDetail, CorrelationID: ack.CorrelationId, Unknown: appendHandoffExt(nil, relay, ext)})
	return AppendEnvelope(make([]byte, 0, 32+len(payload)), kind, ProtoHandoff, requestID, payload), nil
}

// ParseHandoffAck decodes a HandoffAck frame body of the wanted kind and checks token and
// correlation; it returns ErrNotAccepted (with the backend's detail) for a refusal.
func ParseHandoffAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) error {
	_, err := ParseHandoffAckExt(body, kind, token, correlationID)
	return err
}

// ParseHandoffAckExt is ParseHandoffAck that also returns the backend's extension answers.
func ParseHandoffAckExt(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (HandoffExt, error) {
	ack, err := parseHandoffAck(body, kind, token, correlationID)
	if err != nil {
		return HandoffExt{}, err
	}
	relayed, ext := parseHandoffExt(ack.Unknown)
	ext.Relayed = relayed == 1
	return ext, nil
}

func parseHandoffAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (Ack, error) {
	ack, err := decodeHandoffAck(body, kind, token, correlationID)
	if err == nil && !ack.Accepted {
		err = fmt.Errorf("%w: %s", ErrNotAccepted, ack.Detail)
	}
	return ack, err
}

// decodeHandoffAck decodes an ack and checks all but accepted.
func decodeHandoffAck(body []byte, kind wirepb.FrameKind, token []byte, correlationID uint64) (Ack, error) {
	f, err := ParseEnvelope(body)
	if err != nil {
		return Ack{}, fmt.Errorf("%w: %w", ErrMalformedAck, err)
	}
	if f.Kind != kind || f.Protocol != ProtoHandoff || f.Encoding != wirepb.PayloadEncoding_NONE {
		return Ack{}, fmt.Errorf("ack: %s 0x%04X: %w", f.Kind, f.Protocol, ErrNotHandoff)
	}
	ack, err := ParseAck(f.Payload)
	if err != nil {
		return Ack{}, fmt.Errorf("%w: %w", ErrMalformedAck, err)
	}
	switch {
	case !bytes.Equal(ack.Token, token):
		return Ack{}, ErrTokenMatch
	case ack.CorrelationID != correlationID:
		return Ack{}, fmt.Errorf("got %d, want %d: %w", ack.CorrelationID, correlationID, ErrCorrelation)
	}
	return ack, nil
}

// HandoffTokenLen is the length of a handoff token (v1).
const HandoffTokenLen = 16

// ErrNotExt: the backend did not answer the probe as an ext backend.
var ErrNotExt = errors.New("backend did not answer the capability probe")

// ParseHandoffProbeAck decodes the answer to a capability probe; it succeeds only for an ext
// backend's answer: declined, probe echoed, relayed and reuse set. Anything else (a v1
// decline, an acceptance) is ErrNotExt.
func ParseHandoffProbeAck(body []byte) (HandoffExt, error) {
	var tok [HandoffTokenLen]byte
	ack, err := decodeHandoffAck(body, wirepb.FrameKind_RESPONSE, tok[:], 0)
	if err != nil {
		return HandoffExt{}, fmt.Errorf("%w: %w", ErrNotExt, err)
	}
	relayed, e := parseHandoffExt(ack.Unknown)
	if ack.Accepted || !e.Probe || relayed != 1 || !e.Reuse {
		return HandoffExt{}, fmt.Errorf("answered accepted=%v probe=%v relayed=%v reuse=%v: %w",
			ack.Accepted, e.Probe, relayed == 1, e.Reuse, ErrNotExt)
	}
	return HandoffExt{Relayed: true, Reuse: true, Probe: true, Quiet: e.Quiet}, nil
}
