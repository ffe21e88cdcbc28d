package servicedef

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/rpbroker/broker/wire/wirepb"
)

// WithPanicHandler calls h after the Loader recovered a panic at one of its boundaries:
// where is "decode" (one file), "event" (one watch event or rescan), "log" (logging one
// change, which runs the logger's hooks), "notify" (telling the subscribers of one batch
// of changes) or "session" (setting up the watch, which is then set up again). The panic
// is already logged with its stack; h typically counts it. h runs on the Loader's
// goroutine and must not block.
func WithPanicHandler(h func(where string, v any)) Option {
	return func(o *options) { o.onPanic = h }
}

// errSessionPanic ends a watch session that panicked outside any narrower boundary; the Run
// loop starts a new one with the last good snapshot still published.
var errSessionPanic = errors.New("servicedef loader: recovered a panic; restarting the watch")

func (l *Loader) guardedSession(ctx context.Context, tr *retrier) (watched bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			l.recovered("session", v, debug.Stack())
			err = errSessionPanic
		}
	}()
	return l.session(ctx, tr)
}

// guard runs fn and recovers a panic in it, so that one bad event costs that event only:
// the snapshot is swapped atomically, so it is either the one before or the one after.
func (l *Loader) guard(where string, fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			l.recovered(where, v, debug.Stack())
			err = nil
		}
	}()
	return fn()
}

// recovered logs and reports a recovered panic. A logger hook or handler that panics again
// here is swallowed: the loader must outlive its observers.
func (l *Loader) recovered(where string, v any, stack []byte) {
	swallowPanic(func() {
		l.log.Error().Str("where", where).Str("panic", fmt.Sprint(v)).Str("stack", string(stack)).
			Msg("recovered a panic in the servicedef loader; the last good definitions stay in effect")
	})
	if h := l.o.onPanic; h != nil {
		swallowPanic(func() { h(where, v) })
	}
}

func swallowPanic(f func()) {
	defer func() { _ = recover() }()
	f()
}

// decode is Decode for the Loader: a panic while decoding one file rejects that file (its
// last good definition stays) instead of stopping the Loader.
func (l *Loader) decode(path string, b []byte) (def *wirepb.ServiceDefinition, err error) {
	defer func() {
		if v := recover(); v != nil {
			l.recovered("decode", v, debug.Stack())
			def, err = nil, fmt.Errorf("servicedef %s: decoding panicked: %v", path, v)
		}
	}()
	return Decode(path, b)
}
