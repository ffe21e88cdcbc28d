package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/supervisor/launch"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// launchRun is the launcher and what stops it. Its Run is an actor of the supervisor's
// run group (Supervisor.Run).
type launchRun struct {
	m      *launch.Manager
	ctx    context.Context
	cancel context.CancelFunc
	err    error // why launch mode is unavailable, when m is nil
}

// newLauncher builds the one Manager that spawns and supervises every launched backend.
// Backend sockets live in the runtime dir in force at start. A Hello routed before the run
// group starts the Manager waits for it.
func (s *Supervisor) newLauncher() {
	layout, err := names.DefaultLayout(s.cfg.Broker.RuntimeDir)
	if err != nil {
		s.log.Error().Err(err).Msg("launch mode unavailable: backend socket names cannot be derived")
		s.launch = &launchRun{err: err}
		return
	}
	m := launch.New(launch.Options{
		Registry: s.registry,
		Hasher:   s.hasher,
		Layout:   layout,
		Log:      s.log.With().Str("component", "launcher").Logger(),
		Grace:    min(s.cfg.Broker.ShutdownGrace/2, defaultChildGrace),
		Events:   s.launchEvent,
		OnSpawn:  s.metrics.spawnDone,
		Environ:  childEnviron(),
		Thread:   s.o.Thread,
		Adopt:    s.adoption(),
	})
	ctx, cancel := context.WithCancel(s.ctx)
	s.launch = &launchRun{m: m, ctx: ctx, cancel: cancel}
}

// runLauncher is the launcher's actor: it runs until cancelled, even when the Manager
// stops early on an error (logged), so that the launcher alone never ends the group.
func (s *Supervisor) runLauncher() error {
	if err := s.launch.m.Run(s.launch.ctx); err != nil {
		s.log.Error().Err(err).Msg("launcher stopped")
	}
	<-s.launch.ctx.Done()
	return nil
}

// cancelLauncher starts stopping the launcher: spawns in flight are aborted and every
// launched backend gets SIGTERM (SIGKILL after the grace). The run group waits for it.
func (s *Supervisor) cancelLauncher() {
	if s.launch != nil && s.launch.m != nil {
		s.launch.cancel()
	}
}

// launchLost reports whether a plan takes a launch service away (removed, or changed to
// another mode), so backends only it could reach may be left.
func launchLost(plan config.Plan) bool {
	for _, svc := range plan.Removed {
		if svc.Mode == config.ModeLaunch {
			return true
		}
	}
	for _, ch := range plan.Changed {
		if ch.Old.Mode == config.ModeLaunch && ch.New.Mode != config.ModeLaunch {
			return true
		}
	}
	return false
}

// stopUnreachable stops, off the event loop, the launched backends no launch service of
// cfg can reach any more: a backend stays while a launch service is named after its
// service or is "*".
func (s *Supervisor) stopUnreachable(cfg *config.Config) {
	if s.launch == nil || s.launch.m == nil {
		return
	}
	names := map[string]bool{}
	for _, svc := range cfg.Services {
		if svc.Mode == config.ModeLaunch {
			names[svc.Name] = true
		}
	}
	if names[config.AnyService] {
		return
	}
	s.launch.m.StopUnreachable(func(service string) bool { return names[service] })
}

func (s *Supervisor) launchRouter(svc config.Service) serve.Router {
	if s.launch == nil || s.launch.m == nil {
		why := "launch mode unavailable"
		if s.launch != nil && s.launch.err != nil {
			why = s.launch.err.Error()
		}
		return unavailableRouter{why}
	}
	return s.launch.m.Router(launch.Settings{StartTimeout: svc.StartTimeout, IdleTimeout: svc.IdleTimeout})
}

func (s *Supervisor) launchEvent(e launch.Event) {
	reason := e.Reason
	if e.Status != "" {
		reason = e.Status
		if e.Reason != "" {
			reason += ": " + e.Reason
		}
	}
	s.emit(events.Event{
		Kind: e.Kind, Time: e.Time, PID: uint32(e.PID), Instance: e.Instance,
		Service: e.Service, Version: e.Version, Reason: reason,
	})
	// BACKEND_HEALTH's last_error: a start that failed, or a backend that died of itself.
	t := registry.Target{Instance: e.Instance, Service: e.Service, Version: e.Version}
	switch {
	case e.Kind == wirepb.EventKind_SPAWN_ATTEMPT && e.Reason != "":
		s.registry.NoteError(t, "spawn failed: "+e.Reason, time.Now())
	case e.Kind == wirepb.EventKind_DIED_CRASH:
		s.registry.NoteError(t, fmt.Sprintf("pid %d: %s", e.PID, reason), time.Now())
	}
}

// unavailableRouter refuses every Hello with the reason launch mode cannot work.
type unavailableRouter struct{ why string }

func (u unavailableRouter) Route(context.Context, *serve.Request) (serve.Route, error) {
	return serve.Route{}, wire.Refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonSpawnFailed+u.why, wire.RetryBackend)
}
