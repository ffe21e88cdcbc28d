package serve

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// reasonPanic answers a Hello whose routing panicked (ours): the client learns the broker
// failed, rather than reading EOF, and the broker log has the stack.
const reasonPanic = "internal error while routing the Hello"

// recovered is deferred at a serving boundary: a panic below it is logged with its stack
// and counted, and ends only the connection it happened on.
func (l *Loop) recovered(where string) {
	if v := recover(); v != nil {
		l.panicked(where, v)
	}
}

// guard runs fn as a boundary of its own and reports whether it panicked.
func (l *Loop) guard(where string, fn func()) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			l.panicked(where, v)
			panicked = true
		}
	}()
	fn()
	return false
}

func (l *Loop) panicked(where string, v any) {
	l.log.Error().Str("event", "panic").Str("where", where).Str("panic", fmt.Sprint(v)).
		Str("stack", string(debug.Stack())).Msg("panic recovered; connection closed, broker keeps serving")
	l.shared.Observer.PanicRecovered(where)
}

func panicRefusal() *wire.Refusal {
	return refusal(wirepb.ErrorCode_ERROR_INTERNAL, reasonPanic, 0)
}

// refused counts a refusal by code and logs it at most once a second per code and
// reason, with how many were held back, so a peer that floods garbage costs counters,
// not log lines. It logs at info: a refusal is what an operator looks for when a client
// fails. RATE_LIMITED is the exception, at debug: it is the answer to a flood (the Hello
// rate limit, the connection cap, a spent spawn budget), each of which logs its own line.
func (l *Loop) refused(o HelloOutcome) {
	l.shared.Observer.HelloDone(o)
	lvl := zerolog.InfoLevel
	if o.Code == wirepb.ErrorCode_ERROR_RATE_LIMITED {
		lvl = zerolog.DebugLevel
	}
	if !l.levelEnabled(lvl) {
		return
	}
	if ok, n := l.logs.Allow(o.Code.String()+": "+o.Reason, time.Now()); ok {
		l.log.WithLevel(lvl).Str("event", "hello_refused").Str("code", o.Code.String()).Str("reason", o.Reason).
			Str("service", o.Service).Str("version", o.Version).Str("request_id", o.RequestID).
			Int("suppressed", n).Msg("refused")
	}
}

// debugLimited logs msg at debug, at most once a second per msg, with how many were held back.
func (l *Loop) debugLimited(msg string) {
	if !l.debugEnabled() {
		return
	}
	if ok, n := l.logs.Allow(msg, time.Now()); ok {
		l.log.Debug().Int("suppressed", n).Msg(msg)
	}
}

func (l *Loop) debugEnabled() bool { return l.levelEnabled(zerolog.DebugLevel) }

func (l *Loop) levelEnabled(lvl zerolog.Level) bool {
	return l.log.GetLevel() <= lvl && zerolog.GlobalLevel() <= lvl
}
