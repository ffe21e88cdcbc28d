package supervisor

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/rpbroker/broker/internal/task"
	"github.com/rpbroker/broker/servicedef"
)

// defsView lets the servicedef loader be replaced (servicedef_dir changed on reload)
// while loops keep one stable Defs value.
type defsView struct {
	loader atomic.Pointer[servicedef.Loader]
}

func (d *defsView) Lookup(service string) servicedef.Lookup {
	l := d.loader.Load()
	if l == nil {
		return servicedef.Lookup{}
	}
	return l.Lookup(service)
}

// startLoader starts the servicedef loader of dir and the goroutine applying its changes,
// and waits until its first snapshot is published (or the broker stops).
func (s *Supervisor) startLoader(dir string) {
	// The loader recovers and logs its own panics; the supervisor counts them.
	l := servicedef.NewLoader(dir, s.log.With().Str("component", "servicedef").Logger(),
		servicedef.WithPanicHandler(func(string, any) { s.countPanic("servicedef") }))
	changes, unsubscribe := l.Subscribe()
	s.loader = task.Go(s.ctx, func(ctx context.Context) error {
		defer unsubscribe()
		run := task.Go(ctx, l.Run)
		for {
			select {
			case c, ok := <-changes:
				if !ok {
					return run.Stop()
				}
				s.applyServicedefChange(c)
			case <-run.Done():
				if err := run.Err(); err != nil && ctx.Err() == nil {
					s.log.Error().Err(err).Str("dir", dir).Msg("servicedef loader stopped")
				}
				return nil
			}
		}
	})
	s.defs.loader.Store(l)
	select {
	case <-l.Ready():
	case <-s.loader.Done():
	}
}

// applyServicedefChange records one loader change. A panic while doing so costs that change
// only: it is logged with its stack and counted, and the next change is applied.
func (s *Supervisor) applyServicedefChange(c servicedef.Change) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error().Str("where", "servicedef").Str("service", c.Service).Str("change", c.Kind.String()).
				Str("panic", fmt.Sprint(v)).Str("stack", string(debug.Stack())).Msg("recovered a panic while applying a servicedef change")
			s.countPanic("servicedef")
		}
	}()
	s.metrics.servicedefChanges.WithLabelValues(c.Kind.String()).Inc()
	s.servicedefEvent(c)
}

func (s *Supervisor) stopLoader() {
	s.loader.Stop()
	s.loader = nil
}
