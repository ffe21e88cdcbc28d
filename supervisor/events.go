package supervisor

import (
	"fmt"

	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

// openEvents opens the lifecycle event log. A log that cannot be opened is reported and
// the broker runs without it: events are diagnostics, not a reason to refuse service.
func (s *Supervisor) openEvents(path string) {
	l, err := events.Open(path, events.Options{BrokerInstance: fmt.Sprintf("broker:%d", s.pid)})
	if err != nil {
		s.log.Error().Err(err).Msg("lifecycle event log unavailable; continuing without it")
		return
	}
	s.events = l
}

func (s *Supervisor) emit(e events.Event) {
	if s.events != nil {
		s.events.Emit(e)
	}
}

// servicedefEvent records one loader change (SERVICE_DEF_LOADED / _CHANGED).
func (s *Supervisor) servicedefEvent(c servicedef.Change) {
	e := events.Event{Kind: wirepb.EventKind_SERVICE_DEF_CHANGED, Service: c.Service, Reason: c.Kind.String()}
	switch c.Kind {
	case servicedef.Loaded:
		e.Kind = wirepb.EventKind_SERVICE_DEF_LOADED
	case servicedef.Rejected:
		e.Severity = events.SeverityWarn
		if c.Err != nil {
			e.Reason = "rejected: " + c.Err.Error()
		}
	case servicedef.Resync:
		return
	}
	s.emit(e)
}

// observer fans a Hello outcome out to the metrics and, for refusals of a Hello, the
// event log. Accepted Hellos are counted, not written to disk: one write per Hello would
// cost more than the Hello itself. Refusals are logged by the serve loop, rate-limited;
// framing refusals (garbage, foreign peers, the connection cap) are counted only, so a
// flood of them cannot fill the event log.
type observer struct{ s *Supervisor }

func (o observer) HelloDone(h serve.HelloOutcome) {
	o.s.metrics.HelloDone(h)
	o.s.board.helloDone(o.s.config(), h)
	if h.Code == wirepb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		o.s.log.Debug().Str("service", h.Service).Str("version", h.Version).Str("request_id", h.RequestID).
			Uint64("connection_id", h.ConnectionID).Str("took", logfield.Dur(h.Duration)).Str("event", "hello_accepted").Msg("negotiated")
		return
	}
	if h.Framing {
		return
	}
	o.s.emit(events.Event{
		Kind: wirepb.EventKind_HELLO_REFUSED, Service: h.Service, Version: h.Version,
		RequestID: h.RequestID, Reason: h.Code.String() + ": " + h.Reason,
	})
}

// PanicRecovered counts a panic a serve loop recovered (and already logged).
func (o observer) PanicRecovered(where string) { o.s.countPanic(where) }
