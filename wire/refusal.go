package wire

import (
	"github.com/rpbroker/broker/wire/wirepb"
)

// Refusal reasons (docs/protocol.md, "The dispatch order"). They are wire facts: clients match on them.
const (
	ReasonFramingVersion   = "unsupported framing version"
	ReasonHelloTooLarge    = "initial Hello frame exceeds 64 KiB"
	ReasonIncompleteHello  = "incomplete Hello frame"
	ReasonMalformedFrame   = "malformed broker Frame"
	ReasonFDPressure       = "broker is low on file descriptors; retry shortly"
	ReasonEnvelopeVersion  = "frame envelope_version is not v1"
	ReasonKindNotRequest   = "Hello frame kind must be REQUEST"
	ReasonNotControlPlane  = "Hello frame payload_protocol must be control-plane"
	ReasonCompressed       = "Hello payload must not be compressed"
	ReasonMalformedHello   = "malformed Hello payload"
	ReasonProtocolRange    = "client protocol range does not include v1"
	ReasonServiceName      = "invalid service_name"
	ReasonWantedVersion    = "invalid wanted_version"
	ReasonClientVersion    = "client_version exceeds 128 bytes"
	ReasonClientLib        = "client_lib fields exceed 64 bytes"
	ReasonPeerPID          = "peer_pid does not match verified peer"
	ReasonHelloRateLimit   = "Hello rate limit exceeded"
	ReasonShuttingDown     = "broker is shutting down"
	ReasonServiceNotFound  = "service definition was not found"
	ReasonServiceLoad      = "service definition could not be loaded: " // + why
	ReasonServiceNotServed = "service is not served on this socket"
	ReasonBelowMin         = "wanted_version is below min_version"
	ReasonNotAllowed       = "wanted_version is not in version_allow_list"
	ReasonIsolation        = "service isolation could not be resolved: " // + why
	ReasonNotRegistered    = "backend is not registered"
	ReasonSpawnFailed      = "backend spawn failed: " // + why
	ReasonSpawnBudget      = "backend spawn budget exhausted"
	ReasonConnLimit        = "connection limit reached"
)

// Retry hints in milliseconds.
const (
	RetryFDPressure   = 1000
	RetryVersion      = 30000
	RetryBackend      = 1000
	RetryConnLimitMin = 50
)

// Refusal is a refusal ready to be sent: code, reason and optional retry and details.
type Refusal struct {
	Code    wirepb.ErrorCode
	Reason  string
	RetryMS uint64
	Details map[string]string
}

func (r Refusal) Error() string { return r.Code.String() + ": " + r.Reason }

// Proto renders the refusal with the daemon protocol range fixed at v1.
func (r Refusal) Proto() *wirepb.Refused {
	return &wirepb.Refused{
		Reason:            r.Reason,
		DaemonMinProtocol: ProtocolVersion,
		DaemonMaxProtocol: ProtocolVersion,
		Code:              r.Code,
		Details:           r.Details,
		RetryAfterMs:      r.RetryMS,
	}
}

// Refuse is shorthand for a refusal without details.
func Refuse(code wirepb.ErrorCode, reason string, retryMS uint64) Refusal {
	return Refusal{Code: code, Reason: reason, RetryMS: retryMS}
}

// ReplyFrame builds the RESPONSE frame carrying reply, echoing the request's correlation
// fields when the request decoded (req may be nil).
func ReplyFrame(req *wirepb.Frame, protocol uint32, payload []byte) *wirepb.Frame {
	f := NewFrame(wirepb.FrameKind_RESPONSE, protocol, 0, payload)
	if req != nil {
		f.RequestId = req.RequestId
		f.Traceparent = req.Traceparent
		f.Tracestate = req.Tracestate
	}
	return f
}
