package supervisor

import (
	"time"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/serve"
)

// reload runs on the event loop: load and validate the whole file first; an invalid file
// leaves everything running untouched.
func (s *Supervisor) reload() ReloadResult {
	res := ReloadResult{At: time.Now()}
	cfg, err := s.o.Load()
	if err != nil {
		res.Err = err
		s.log.Error().Err(err).Str("event", "config_reload_failed").Msg("reload rejected; the running config is unchanged")
		s.metrics.reloads.WithLabelValues("failure").Inc()
		s.metrics.reloadOK.Set(0)
		s.recordReload(res)
		return res
	}
	plan := config.Diff(s.cfg, cfg)
	res.Plan, res.Lines = plan, plan.Lines()
	s.apply(cfg, plan)
	for _, line := range res.Lines {
		s.log.Info().Str("event", "config_reload").Msg(line)
	}
	s.metrics.reloads.WithLabelValues("success").Inc()
	s.metrics.reloadOK.Set(1)
	s.metrics.reloadTime.SetToCurrentTime()
	s.recordReload(res)
	return res
}

func (s *Supervisor) recordReload(res ReloadResult) {
	s.statusMu.Lock()
	s.lastReload = res
	s.reloadSeq++
	s.statusMu.Unlock()
}

// apply carries out a validated plan. New sockets are bound before old ones are released;
// a service whose socket stays keeps its listener and open connections even when its
// backend or mode changes; unchanged services are not touched.
func (s *Supervisor) apply(cfg *config.Config, plan config.Plan) {
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
	for _, svc := range plan.Added {
		s.setRunner(svc.Name, s.startRunner(svc))
	}
	for _, ch := range plan.Changed {
		r, _ := s.runnerByName(ch.Name)
		if ch.Old.Socket != ch.New.Socket {
			s.setRunner(ch.Name, s.startRunner(ch.New))
			retire = append(retire, r)
			continue
		}
		r.svc = ch.New
		prev := r.backend
		if backendChanged(ch.Old, ch.New) {
			r.backend = s.startBackend(ch.New, r.log)
		}
		r.apply(s.settingsFor(ch.New, r.backend))
		if prev != r.backend {
			prev.stop()
		}
	}
	if old.Broker.HelloTimeout != cfg.Broker.HelloTimeout {
		for _, name := range plan.Unchanged {
			r, _ := s.runnerByName(name)
			r.apply(s.settingsFor(r.svc, r.backend))
		}
	}
	for _, svc := range plan.Removed {
		r, _ := s.runnerByName(svc.Name)
		s.deleteRunner(svc.Name)
		retire = append(retire, r)
	}
	for _, r := range retire {
		r.stop(grace)
	}
}

func backendChanged(a, b config.Service) bool {
	return a.Mode != b.Mode || a.Version != b.Version || a.BackendEndpoint != b.BackendEndpoint ||
		a.Verify != b.Verify || a.HandoffEndpoint != b.HandoffEndpoint
}

func (s *Supervisor) setRunner(name string, r *runner) {
	s.statusMu.Lock()
	s.runners[name] = r
	s.statusMu.Unlock()
}

func (s *Supervisor) deleteRunner(name string) {
	s.statusMu.Lock()
	delete(s.runners, name)
	s.statusMu.Unlock()
}

// statusExtra is merged into STATUS JSON: the config generation and the last reload.
func (s *Supervisor) statusExtra() map[string]any {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	last := map[string]any{"attempts": s.reloadSeq}
	if !s.lastReload.At.IsZero() {
		last["ok"] = s.lastReload.Err == nil
		last["at_unix_ms"] = s.lastReload.At.UnixMilli()
		last["plan"] = s.lastReload.Lines
		if s.lastReload.Err != nil {
			last["error"] = s.lastReload.Err.Error()
		}
	}
	return map[string]any{"config_reload": last}
}
