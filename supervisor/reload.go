package supervisor

import (
	"net"
	"time"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/serve"
)

// reload runs on the event loop: load and validate the whole file, then bind every new
// control socket; only when all of that succeeded is anything running changed. A failed
// reload leaves the running config whole.
func (s *Supervisor) reload() ReloadResult {
	res := ReloadResult{At: time.Now()}
	cfg, err := s.o.Load()
	if err != nil {
		res.Err = err
		s.log.Error().Err(err).Str("event", "config_reload_failed").Msg("reload rejected; the running config is unchanged")
		return s.reloadFailed(res)
	}
	plan := config.Diff(s.cfg, cfg)
	bound, err := s.bindNew(plan)
	if err != nil {
		res.Err = err
		s.log.Error().Err(err).Str("event", "config_reload_failed").
			Msg("reload not applied: a new control socket cannot be bound; the running config is unchanged")
		return s.reloadFailed(res)
	}
	res.Plan, res.Lines = plan, plan.Lines()
	s.apply(cfg, plan, bound)
	for _, line := range res.Lines {
		s.log.Info().Str("event", "config_reload").Msg(line)
	}
	s.metrics.reloads.WithLabelValues("success").Inc()
	s.metrics.reloadOK.Set(1)
	s.metrics.reloadTime.SetToCurrentTime()
	// The config and the reload that brought it are published together.
	s.publish(func(next *snapshot) {
		next.cfg = cfg
		next.lastReload = res
		next.reloadSeq++
	})
	return res
}

func (s *Supervisor) reloadFailed(res ReloadResult) ReloadResult {
	s.metrics.reloads.WithLabelValues("failure").Inc()
	s.metrics.reloadOK.Set(0)
	s.publish(func(next *snapshot) {
		next.lastReload = res
		next.reloadSeq++
	})
	return res
}

// apply carries out a validated plan whose new sockets are already bound (bound, by
// service; see bindNew). A service whose socket stays keeps its listener and open
// connections even when its backend or mode changes; unchanged services are not touched.
func (s *Supervisor) apply(cfg *config.Config, plan config.Plan, bound map[string]*net.UnixListener) {
	old := s.cfg
	s.cfg = cfg
	if old.Broker.ServicedefDir != cfg.Broker.ServicedefDir {
		s.stopLoader()
		s.startLoader(cfg.Broker.ServicedefDir)
	}
	if old.Broker.HelloRateLimit != cfg.Broker.HelloRateLimit {
		s.shared.SetLimiter(serve.NewRateLimiter(cfg.Broker.HelloRateLimit, time.Second, nil))
	}
	if s.o.OnBrokerChange != nil && old.Broker != cfg.Broker {
		s.o.OnBrokerChange(old.Broker, cfg.Broker)
	}
	grace := cfg.Broker.ShutdownGrace
	var retire []*runner
	// A new socket missing from bound is one a retiring service holds: its runner starts
	// once that service has let go of the path.
	var later []config.Service
	start := func(svc config.Service) {
		if ln, ok := bound[svc.Name]; ok {
			s.runners[svc.Name] = s.startRunner(svc, ln)
		} else {
			later = append(later, svc)
		}
	}
	for _, svc := range plan.Added {
		start(svc)
	}
	for _, ch := range plan.Changed {
		r := s.runners[ch.Name]
		if ch.Effect == config.Rebind {
			start(ch.New)
			retire = append(retire, r)
			continue
		}
		r.svc = ch.New
		prev := r.backend
		if ch.Effect == config.NewBackend {
			r.backend = s.startBackend(ch.New, r.log)
		}
		r.apply(s.settingsFor(ch.New, r.backend))
		if prev != r.backend {
			prev.stop()
		}
	}
	if old.Broker.HelloTimeout != cfg.Broker.HelloTimeout {
		for _, name := range plan.Unchanged {
			r := s.runners[name]
			r.apply(s.settingsFor(r.svc, r.backend))
		}
	}
	for _, svc := range plan.Removed {
		retire = append(retire, s.runners[svc.Name])
		delete(s.runners, svc.Name)
	}
	for _, r := range retire {
		r.stop(grace)
	}
	// Once the retired loops have stopped, none of them can spawn another such backend.
	if launchLost(plan) {
		s.stopUnreachable(cfg)
	}
	for _, svc := range later {
		s.runners[svc.Name] = s.startRunner(svc, nil)
	}
}
