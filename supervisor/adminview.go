package supervisor

import (
	"sync"
	"sync/atomic"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// This file is what the admin verbs read of the running broker: the typed values of the
// admin.Handler contract, built from the published snapshot and the status board.

func (s *Supervisor) adminFor(svc config.Service, socket string) *admin.Handler {
	return &admin.Handler{
		Instance: instanceOf(svc),
		Pipe:     socket,
		Shared:   s.shared,
		Registry: s.registry,
		Metrics:  s.metrics.render,
		Config:   s.effectiveConfig,
		Events:   s.recentEvents,
		Budgets:  s.spawnBudgets,
		Reload:   s.reloadStatus,
		Services: s.serviceStatuses,
		Image:    s.image,
		Upgrade:  s.adminUpgrade,
	}
}

// instanceOf is the registry instance of a service's backends.
func instanceOf(svc config.Service) string {
	if svc.Name == config.AnyService {
		return names.SharedInstance
	}
	return names.PrivateInstance(svc.Name)
}

// statusBoard is what `broker status` shows of each service beyond its config: the
// runner serving it now and the Hellos answered since start. Its zero value is ready.
type statusBoard struct {
	runners sync.Map // service name → *runner, the latest started for that name
	hellos  sync.Map // service name → *helloCount
}

type helloCount struct{ hellos, refusals atomic.Uint64 }

// track makes r the runner status reports for its service.
func (b *statusBoard) track(r *runner) { b.runners.Store(r.svc.Name, r) }

// helloDone counts a Hello against the service of cfg that answered it: the one of its
// name, else "*". A refusal before the Hello was read names no service and is counted
// only in the metrics. Keys are service names of the config, so Hellos naming anything
// cannot grow the table.
func (b *statusBoard) helloDone(cfg *config.Config, h serve.HelloOutcome) {
	if h.Service == "" {
		return
	}
	name := ""
	for _, svc := range cfg.Services {
		if svc.Name == h.Service {
			name = svc.Name
			break
		}
		if svc.Name == config.AnyService {
			name = svc.Name
		}
	}
	if name == "" {
		return
	}
	c, ok := b.hellos.Load(name)
	if !ok {
		c, _ = b.hellos.LoadOrStore(name, &helloCount{})
	}
	hc := c.(*helloCount)
	hc.hellos.Add(1)
	if h.Code != wirepb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		hc.refusals.Add(1)
	}
}

// serviceStatuses lists every service of the config in force, in config order.
func (s *Supervisor) serviceStatuses() []admin.ServiceStatus {
	cfg := s.config()
	out := make([]admin.ServiceStatus, 0, len(cfg.Services))
	for _, svc := range cfg.Services {
		st := admin.ServiceStatus{
			Name: svc.Name, Mode: svc.Mode, Socket: svc.Socket, Instance: instanceOf(svc),
			State: admin.StateBinding,
		}
		if v, ok := s.board.runners.Load(svc.Name); ok {
			r := v.(*runner)
			if l := r.loop.Load(); l != nil {
				st.State, st.ConnectionsOpen = admin.StateServing, l.ConnectionsOpen()
			} else if e := r.bindErr.Load(); e != nil {
				st.Reason = *e
			}
		}
		if svc.Mode == config.ModeLaunch && s.launch != nil && s.launch.m == nil && s.launch.err != nil {
			st.State, st.Reason = admin.StateFailed, "launch mode unavailable: "+s.launch.err.Error()
		}
		if v, ok := s.board.hellos.Load(svc.Name); ok {
			hc := v.(*helloCount)
			st.Hellos, st.Refusals = hc.hellos.Load(), hc.refusals.Load()
		}
		out = append(out, st)
	}
	return out
}

// reloadStatus is the config generation and the last reload, for STATUS.
func (s *Supervisor) reloadStatus() admin.ReloadStatus {
	st := s.state.Load()
	r := admin.ReloadStatus{Attempts: st.reloadSeq}
	if !st.lastReload.At.IsZero() {
		ok := st.lastReload.Err == nil
		r.OK, r.AtUnixMS, r.Plan = &ok, st.lastReload.At.UnixMilli(), st.lastReload.Lines
		if st.lastReload.Err != nil {
			r.Error = st.lastReload.Err.Error()
		}
	}
	return r
}

func (s *Supervisor) recentEvents() []*wirepb.LifecycleEvent {
	if s.events == nil {
		return nil
	}
	var out []*wirepb.LifecycleEvent
	for _, e := range s.events.Recent() {
		out = append(out, e.Proto(""))
	}
	return out
}

func (s *Supervisor) spawnBudgets() []admin.SpawnBudget {
	if s.launch == nil || s.launch.m == nil {
		return nil
	}
	var out []admin.SpawnBudget
	for _, b := range s.launch.m.Budgets() {
		out = append(out, admin.SpawnBudget{
			BrokerInstance: b.BrokerInstance, ServiceName: b.ServiceName, ServiceVersion: b.ServiceVersion,
			AttemptsUsed: b.AttemptsUsed, Remaining: b.Remaining, InFlight: b.InFlight, RetryAfterMS: b.RetryAfterMS,
		})
	}
	return out
}

func (s *Supervisor) effectiveConfig() admin.EffectiveConfig {
	cfg := s.config()
	leaf := func(key string, v any) admin.ConfigValue {
		src, ok := cfg.Sources[key]
		if !ok {
			src = "config-file"
		}
		return admin.ConfigValue{Value: v, Source: src}
	}
	b := cfg.Broker
	out := admin.EffectiveConfig{
		Broker: map[string]admin.ConfigValue{
			"servicedef_dir":   leaf("servicedef_dir", b.ServicedefDir),
			"runtime_dir":      leaf("runtime_dir", b.RuntimeDir),
			"log_format":       leaf("log_format", b.LogFormat),
			"log_level":        leaf("log_level", b.LogLevel),
			"hello_timeout":    leaf("hello_timeout", b.HelloTimeout.String()),
			"hello_rate_limit": leaf("hello_rate_limit", b.HelloRateLimit),
			"shutdown_grace":   leaf("shutdown_grace", b.ShutdownGrace.String()),
			"event_log":        leaf("event_log", b.EventLog),
		},
		Services: map[string]map[string]admin.ConfigValue{},
		Protocol: map[string]admin.ConfigValue{
			"framing_version":  {Value: 1, Source: "protocol-v1"},
			"envelope_version": {Value: 1, Source: "protocol-v1"},
			"max_frame_bytes":  {Value: 16 << 20, Source: "protocol-v1"},
			"max_hello_bytes":  {Value: 64 << 10, Source: "protocol-v1"},
		},
	}
	for _, svc := range cfg.Services {
		cf := func(v any) admin.ConfigValue { return admin.ConfigValue{Value: v, Source: "config-file"} }
		out.Services[svc.Name] = map[string]admin.ConfigValue{
			"mode": cf(svc.Mode), "socket": cf(svc.Socket), "version": cf(svc.Version),
			"backend_endpoint": cf(svc.BackendEndpoint), "handoff_endpoint": cf(svc.HandoffEndpoint),
			"verify": cf(svc.Verify), "max_connections": cf(svc.MaxConnections),
			"idle_timeout": cf(svc.IdleTimeout.String()), "start_timeout": cf(svc.StartTimeout.String()),
		}
	}
	return out
}
