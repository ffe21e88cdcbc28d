// Package admin answers the v1 admin verbs (payload protocol 0xAD01) with live values
// from the broker: connections, fd pressure, the backend registry. Every JSON verb's
// reply is a typed value (types.go) rendered here; human.go renders the same types as
// text for the CLI.
package admin

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	contentText        = "text/plain"
	contentJSON        = "application/json"
	contentOpenMetrics = "application/openmetrics-text"
)

// Handler serves admin verbs for one control socket. The func fields read the broker's
// state when a verb needs it; any may be nil (the part is then reported empty).
type Handler struct {
	Instance string // broker instance id of the socket, e.g. private:zccache
	Pipe     string // the control socket path
	Shared   *serve.Shared
	Registry *registry.Registry
	// Metrics renders OpenMetrics text; nil means METRICS is unsupported.
	Metrics func() (string, error)
	// Config is the effective configuration, every key with its source.
	Config func() EffectiveConfig
	// Events returns the most recent lifecycle events, oldest first.
	Events func() []*wirepb.LifecycleEvent
	// Budgets returns the spawn budgets in use, for DUMP.
	Budgets func() []SpawnBudget
	// Reload is the config generation and the last reload, for STATUS.
	Reload func() ReloadStatus
	// Services lists every service of the broker, for STATUS; Backends and the instance
	// are filled in here from the registry.
	Services func() []ServiceStatus
	// Image is the running image (generation, version, build id, last upgrade), for
	// STATUS; Upgrade starts an upgrade in place (VerbUpgrade). See upgrade.go.
	Image   func() Image
	Upgrade func(ctx context.Context, binary string) (string, error)
	Now     func() time.Time
}

// Serve implements serve.Admin.
func (h *Handler) Serve(ctx context.Context, req *wirepb.AdminRequest) *wirepb.AdminReply {
	switch req.Verb {
	case wirepb.AdminVerb_HEALTHZ:
		return text("ok\n", 0)
	case wirepb.AdminVerb_READYZ:
		if h.ready() {
			return text("ready\n", 0)
		}
		return text("not ready\n", 1)
	case wirepb.AdminVerb_STATUS:
		if req.Json {
			return h.json("status", h.status())
		}
		return text(fmt.Sprintf("broker_instance: %s\naccepting_hello: %t\n", h.Instance, h.ready()), 0)
	case wirepb.AdminVerb_LIST_INSTANCES:
		return h.json("list_instances", h.listInstances())
	case wirepb.AdminVerb_BACKEND_HEALTH:
		return h.json("backend_health", h.backendHealth(req.ServiceName))
	case wirepb.AdminVerb_DUMP:
		return h.json("dump", h.dump())
	case wirepb.AdminVerb_CONFIG:
		return h.json("config", ConfigReply{Values: h.config()})
	case wirepb.AdminVerb_DIAGNOSE:
		return h.diagnose(req.OutputPath)
	case wirepb.AdminVerb_METRICS:
		if h.Metrics == nil {
			return text("unsupported admin verb\n", 2)
		}
		body, err := h.Metrics()
		if err != nil {
			return text("metrics: "+err.Error()+"\n", 1)
		}
		return &wirepb.AdminReply{Kind: wirepb.AdminReplyKind_OPENMETRICS, Body: body, ContentType: contentOpenMetrics}
	case wirepb.AdminVerb_SHUTDOWN:
		return text("broker shutting down\n", 0)
	case VerbUpgrade:
		return h.upgrade(ctx, req)
	}
	return text("unsupported admin verb\n", 2)
}

func (h *Handler) ready() bool {
	return !h.Shared.Draining() && !h.Shared.FD.Demoted()
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) config() EffectiveConfig {
	if h.Config == nil {
		return EffectiveConfig{}
	}
	return h.Config()
}

func (h *Handler) listInstances() ListInstancesReply {
	state := "ready"
	if !h.ready() {
		state = "draining"
	}
	return ListInstancesReply{Instances: []Instance{{
		BrokerInstance: h.Instance, Pipe: h.Pipe, PID: os.Getpid(), State: state,
	}}}
}

func (h *Handler) status() StatusReply {
	list := h.backends()
	st := StatusReply{
		BrokerInstance:  h.Instance,
		BrokerPID:       os.Getpid(),
		UptimeSeconds:   int64(h.now().Sub(h.Shared.Started()).Seconds()),
		AcceptingHello:  h.ready(),
		ConnectionsOpen: h.Shared.ConnectionsOpen(),
		FDPressure:      FDPressure{Demoted: h.Shared.FD.Demoted()},
		Backends:        backendStatuses(list, ""),
	}
	if h.Reload != nil {
		r := h.Reload()
		st.ConfigReload = &r
	}
	if h.Image != nil {
		im := h.Image()
		st.Generation, st.Version, st.BuildID, st.Upgrade = im.Generation, im.Version, im.BuildID, im.Upgrade
	}
	if h.Services != nil {
		st.Services = h.Services()
		for i := range st.Services {
			st.Services[i].Backends = backendStatuses(list, st.Services[i].Instance)
		}
	}
	return st
}

// backendStatuses lists the entries of instance ("" for all), never nil: v1 clients
// read "backends": [] when there is none.
func backendStatuses(list []*registry.Backend, instance string) []BackendStatus {
	out := []BackendStatus{}
	for _, b := range list {
		if instance != "" && b.Key.Instance != instance {
			continue
		}
		out = append(out, BackendStatus{
			ServiceName: b.Key.Service, ServiceVersion: b.Key.Version, PID: b.PID,
			BackendPipe: b.Pipe, LastActiveUnixMS: lastActive(b), State: state(b),
			Mode: b.Mode, Instance: b.Key.Instance, StartedUnixMS: b.Started.UnixMilli(),
		})
	}
	return out
}

// backendHealth reports every live backend of service ("" for all) with the last
// problem recorded for its version, then each version with a recorded problem and no
// live backend as "down": a backend that cannot come up is the one an operator asks about.
func (h *Handler) backendHealth(service string) BackendHealthReply {
	var faults []registry.Fault
	if h.Registry != nil {
		faults = h.Registry.Faults()
	}
	lastErr := map[registry.Target]registry.Fault{}
	for _, f := range faults {
		lastErr[f.Target] = f
	}
	out := BackendHealthReply{ServiceName: service, Backends: []BackendHealth{}}
	live := map[registry.Target]bool{}
	for _, b := range h.backends() {
		if service != "" && b.Key.Service != service {
			continue
		}
		var last int64
		if t := b.LastHello(); !t.IsZero() {
			last = t.UnixMilli()
		}
		t := registry.TargetOf(b.Key)
		live[t] = true
		out.Backends = append(out.Backends, BackendHealth{
			ServiceName: b.Key.Service, ServiceVersion: b.Key.Version, PID: b.PID, State: state(b),
			LastHelloUnixMS: last, LastError: lastErr[t].Err,
		})
	}
	for _, f := range faults {
		if live[f.Target] || (service != "" && f.Service != service) {
			continue
		}
		out.Backends = append(out.Backends, BackendHealth{
			ServiceName: f.Service, ServiceVersion: f.Version, State: "down", LastError: f.Err,
		})
	}
	return out
}

func (h *Handler) dump() DumpReply {
	d := DumpReply{
		BackendTable:          []DumpBackend{},
		SpawnBudgets:          []SpawnBudget{},
		RecentLifecycleEvents: []LifecycleEvent{},
		EffectiveConfig:       h.config(),
		ConnectionsOpen:       h.Shared.ConnectionsOpen(),
		HellosInFlight:        h.Shared.HellosInFlight(),
	}
	for _, b := range h.backends() {
		d.BackendTable = append(d.BackendTable, DumpBackend{
			BrokerInstance: b.Key.Instance, ServiceName: b.Key.Service, ServiceVersion: b.Key.Version,
			ExeHash: fmt.Sprintf("%x", b.Key.ExeHash), PID: b.PID, BackendPipe: b.Pipe,
			StartedUnixMS: b.Started.UnixMilli(), LastActiveUnixMS: lastActive(b), State: state(b), Mode: b.Mode,
		})
	}
	if h.Budgets != nil {
		d.SpawnBudgets = append(d.SpawnBudgets, h.Budgets()...)
	}
	if h.Events != nil {
		for _, e := range h.Events() {
			d.RecentLifecycleEvents = append(d.RecentLifecycleEvents, EventOf(e))
		}
	}
	return d
}

// EventOf is the JSON form of a recorded lifecycle event.
func EventOf(m *wirepb.LifecycleEvent) LifecycleEvent {
	extra := map[string]string{}
	for k, v := range m.GetExtra() {
		extra[k] = v
	}
	return LifecycleEvent{
		TsMS: m.GetTsMs(), PID: m.GetPid(), ServiceName: m.GetServiceName(), Kind: m.GetKind().String(),
		Reason: m.GetReason(), Extra: extra, SeverityNumber: m.GetSeverityNumber(),
		SeverityText: m.GetSeverityText(), RequestID: m.GetRequestId(),
		ConnectionID: m.GetConnectionId(), BrokerInstance: m.GetBrokerInstance(),
	}
}

func (h *Handler) backends() []*registry.Backend {
	if h.Registry == nil {
		return nil
	}
	return h.Registry.List()
}

func lastActive(b *registry.Backend) int64 {
	if t := b.LastHello(); !t.IsZero() {
		return t.UnixMilli()
	}
	return b.Started.UnixMilli()
}

func state(b *registry.Backend) string {
	if b.Alive() {
		return "running"
	}
	return "exited"
}

func text(body string, exit uint32) *wirepb.AdminReply {
	return &wirepb.AdminReply{Kind: wirepb.AdminReplyKind_TEXT, Body: body, ExitCode: exit, ContentType: contentText}
}

// VerbByName maps CLI verb names (status, backend-health, list-instances, …) to verbs.
func VerbByName(name string) (wirepb.AdminVerb, bool) {
	key := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	v, ok := wirepb.AdminVerb_value[key]
	if !ok || v == 0 {
		return 0, false
	}
	return wirepb.AdminVerb(v), true
}
