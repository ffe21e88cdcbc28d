package supervisor

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"

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

// loaderRun is the running loader and the handle to stop it.
type loaderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Supervisor) startLoader(dir string) {
	// The loader recovers and logs its own panics; the supervisor counts them.
	l := servicedef.NewLoader(dir, s.log.With().Str("component", "servicedef").Logger(),
		servicedef.WithPanicHandler(func(string, any) { s.countPanic("servicedef") }))
	ctx, cancel := context.WithCancel(s.ctx)
	lr := &loaderRun{cancel: cancel, done: make(chan struct{})}
	changes, unsubscribe := l.Subscribe()
	go func() {
		defer close(lr.done)
		defer unsubscribe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := l.Run(ctx); err != nil && ctx.Err() == nil {
				s.log.Error().Err(err).Str("dir", dir).Msg("servicedef loader stopped")
			}
		}()
		for {
			select {
			case c, ok := <-changes:
				if !ok {
					<-done
					return
				}
				s.applyServicedefChange(c)
			case <-done:
				return
			}
		}
	}()
	s.defs.loader.Store(l)
	s.loader = lr
	select {
	case <-l.Ready():
	case <-ctx.Done():
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
	if s.loader == nil {
		return
	}
	s.loader.cancel()
	<-s.loader.done
	s.loader = nil
}
