package launch

import (
	"context"
	"errors"
	"time"

	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Settings are the launch settings of one service (config.Service maps onto them).
type Settings struct {
	StartTimeout time.Duration // 0 = DefaultStartTimeout
	IdleTimeout  time.Duration // 0 = never stop for idleness
}

func (s Settings) startTimeout() time.Duration {
	if s.StartTimeout > 0 {
		return s.StartTimeout
	}
	return DefaultStartTimeout
}

// Router returns the serve.Router of a launch-mode service with settings s.
func (m *Manager) Router(s Settings) serve.Router { return router{m: m, s: s} }

type router struct {
	m *Manager
	s Settings
}

// Route reuses the live backend for the Hello's key, or starts one: concurrent Hellos
// for the same cold key share one spawn and its result. ctx ending (the serve loop
// stopping) abandons the wait, not the spawn.
func (r router) Route(ctx context.Context, req *serve.Request) (serve.Route, error) {
	m := r.m
	bin, err := resolveBinary(req.Def)
	if err != nil {
		return serve.Route{}, refuseSpawn(err.Error())
	}
	hash, err := m.o.Hasher.HashFile(bin)
	if err != nil {
		return serve.Route{}, refuseSpawn(err.Error())
	}
	key := registry.Key{Instance: req.Instance, Service: req.Hello.GetServiceName(),
		Version: req.Hello.GetWantedVersion(), ExeHash: hash}
	// A Hello may arrive while Run is still starting (the caller starts Run and its serve
	// loops side by side): it waits for Run rather than reading "shutting down".
	select {
	case <-m.running:
	case <-ctx.Done():
		return serve.Route{}, toRefusal(errClosing)
	}
	for {
		if rt, ok := m.warm(key); ok {
			return rt, nil
		}
		f, err := m.claim(key, func(attempt int) (serve.Route, error) {
			log := m.o.Log.With().Str("service", key.Service).Str("version", key.Version).Int("attempt", attempt).Logger()
			if attempt > 1 {
				log.Warn().Str("event", "respawn").Int("budget", budgetAttempts).Str("window", logfield.Dur(budgetWindow)).
					Msg("respawning backend: its last start failed or it crashed")
			}
			rt, err := m.spawn(req, bin, key, r.s)
			if m.o.OnSpawn != nil {
				m.o.OnSpawn(key, err)
			}
			// Every failure passes here, whichever step failed (bind, exec, probe,
			// start_timeout); a shutdown aborting the spawn is not one.
			if err != nil && !errors.Is(err, errClosing) {
				log.Warn().Err(err).Str("event", "spawn_failed").Str("binary", bin).Msg("backend spawn failed")
			}
			return rt, err
		})
		if err != nil {
			return serve.Route{}, toRefusal(err)
		}
		if f == nil {
			continue // a backend for key became ready meanwhile
		}
		// Every Hello, the first included, waits for the Manager-owned spawn, so a
		// stopping serve loop is never held up by a backend that is slow to start.
		select {
		case <-f.done:
		case <-ctx.Done():
			return serve.Route{}, toRefusal(errClosing)
		case <-m.runCtx.Done(): // set before running closed; shutdown answers at once
			return serve.Route{}, toRefusal(errClosing)
		}
		if f.err != nil {
			return serve.Route{}, toRefusal(f.err)
		}
		// Success: route through warm, which also records the Hello; if the child is
		// already gone, claim again.
	}
}

// warm routes to the verified child of key, if there is one that is not being stopped.
func (m *Manager) warm(key registry.Key) (serve.Route, bool) {
	m.mu.Lock()
	c := m.ready[key]
	m.mu.Unlock()
	if c == nil {
		return serve.Route{}, false
	}
	now := time.Now()
	if !c.touch(now) {
		return serve.Route{}, false
	}
	c.mu.Lock()
	be := c.be
	c.mu.Unlock()
	if be != nil {
		be.Touch(now)
	}
	return serve.Route{Pipe: c.endpoint, Version: key.Version}, true
}

func refuseSpawn(why string) wire.Refusal {
	return wire.Refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonSpawnFailed+why, wire.RetryBackend)
}

// toRefusal maps a spawn result to the error Route returns.
func toRefusal(err error) error {
	var se *spawnError
	var ref wire.Refusal
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ref):
		return ref
	case errors.Is(err, errClosing):
		return wire.Refuse(wirepb.ErrorCode_ERROR_SHUTTING_DOWN, wire.ReasonShuttingDown, 0)
	case errors.As(err, &se):
		return refuseSpawn(se.why)
	default:
		return refuseSpawn(err.Error())
	}
}
