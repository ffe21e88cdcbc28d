// Package events is the broker's lifecycle event log (docs/protocol.md, "Lifecycle events"):
// LifecycleEvent records appended to a broker-owned file, one write(2) per event, with
// size-based rotation and an in-memory ring of the most recent events for admin DUMP.
//
// On-disk format: the file is a sequence of v1 frames, the same framing as the control
// socket: [0x01][u32 little-endian body length][body], where body is the deterministic
// protobuf encoding (wire.Marshal) of one wirepb.LifecycleEvent. Every record, header
// included, is at most MaxRecordBytes = 512 bytes (the POSIX PIPE_BUF floor), so the
// encoded event itself is at most MaxEventBytes = 507 bytes, which also satisfies the
// spec's "≤ 512 bytes per encoded event". See Bound for how oversized events are cut.
package events

import (
	"fmt"
	"maps"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Severity is an OpenTelemetry severity number, 1..24; 0 means "derive from the kind".
type Severity uint32

// The base numbers of the OpenTelemetry severity ranges.
const (
	SeverityTrace Severity = 1
	SeverityDebug Severity = 5
	SeverityInfo  Severity = 9
	SeverityWarn  Severity = 13
	SeverityError Severity = 17
	SeverityFatal Severity = 21
)

// Text is the OpenTelemetry short name: INFO for 9, INFO2 for 10, …, "" for 0.
func (s Severity) Text() string {
	if s == 0 {
		return ""
	}
	s = min(s, 24)
	names := [...]string{"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
	name, step := names[(s-1)/4], (s-1)%4
	if step == 0 {
		return name
	}
	return fmt.Sprintf("%s%d", name, step+1)
}

// DefaultSeverity is the severity of an event of kind k whose Severity is unset.
func DefaultSeverity(k wirepb.EventKind) Severity {
	switch k {
	case wirepb.EventKind_DIED_CRASH, wirepb.EventKind_CACHE_CORRUPTION_DETECTED,
		wirepb.EventKind_SECURITY_VIOLATION, wirepb.EventKind_TEARDOWN_HOOK_FAILED:
		return SeverityError
	case wirepb.EventKind_VERSION_MISMATCH, wirepb.EventKind_HELLO_REFUSED,
		wirepb.EventKind_BROADCAST_TIMEOUT, wirepb.EventKind_PROTOCOL_DOWNGRADE,
		wirepb.EventKind_RESOURCE_PRESSURE:
		return SeverityWarn
	}
	return SeverityInfo
}

// Event is one lifecycle event as the broker reports it.
//
// LifecycleEvent has no version or instance field: a non-empty Version is recorded as
// extra["version"] (unless Extra already has that key), and Instance, when set, is the
// event's broker_instance, overriding Options.BrokerInstance.
type Event struct {
	Kind         wirepb.EventKind
	Service      string
	Version      string
	Reason       string
	RequestID    string
	Instance     string
	PID          uint32
	ConnectionID uint64
	Severity     Severity // 0: DefaultSeverity(Kind); above 24: 24
	Extra        map[string]string
	Time         time.Time // zero: Options.Now() at Emit
}

// Proto converts e to the wire message; brokerInstance applies when e.Instance is empty.
// The result owns its Extra map, so bounding it never touches the caller's map.
func (e Event) Proto(brokerInstance string) *wirepb.LifecycleEvent {
	sev := e.Severity
	if sev == 0 {
		sev = DefaultSeverity(e.Kind)
	}
	sev = min(sev, 24)
	extra := maps.Clone(e.Extra)
	if e.Version != "" {
		if extra == nil {
			extra = map[string]string{}
		}
		if _, ok := extra["version"]; !ok {
			extra["version"] = e.Version
		}
	}
	if e.Instance != "" {
		brokerInstance = e.Instance
	}
	var ts uint64
	if ms := e.Time.UnixMilli(); ms > 0 {
		ts = uint64(ms)
	}
	return &wirepb.LifecycleEvent{
		TsMs:           ts,
		Pid:            e.PID,
		ServiceName:    e.Service,
		Kind:           e.Kind,
		Reason:         e.Reason,
		Extra:          extra,
		SeverityNumber: uint32(sev),
		SeverityText:   sev.Text(),
		RequestId:      e.RequestID,
		ConnectionId:   e.ConnectionID,
		BrokerInstance: brokerInstance,
	}
}

// JSON is the snake_case map form of an encoded event for encoding/json (admin DUMP).
// Every key is present so the shape does not depend on the event.
func JSON(m *wirepb.LifecycleEvent) map[string]any {
	extra := maps.Clone(m.GetExtra())
	if extra == nil {
		extra = map[string]string{}
	}
	return map[string]any{
		"ts_ms":           m.GetTsMs(),
		"pid":             m.GetPid(),
		"service_name":    m.GetServiceName(),
		"kind":            m.GetKind().String(),
		"reason":          m.GetReason(),
		"extra":           extra,
		"severity_number": m.GetSeverityNumber(),
		"severity_text":   m.GetSeverityText(),
		"request_id":      m.GetRequestId(),
		"connection_id":   m.GetConnectionId(),
		"broker_instance": m.GetBrokerInstance(),
	}
}
