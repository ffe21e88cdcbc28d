// Package admin answers the v1 admin verbs (payload protocol 0xAD01) with live values
// from the broker: connections, fd pressure, the backend registry.
package admin

import (
	"context"
	"encoding/json"
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

// Handler serves admin verbs for one control socket.
type Handler struct {
	Instance string // broker instance id of the socket, e.g. private:zccache
	Pipe     string // the control socket path
	Shared   *serve.Shared
	Registry *registry.Registry
	// Metrics renders OpenMetrics text; nil means METRICS is unsupported.
	Metrics func() (string, error)
	// Config returns the effective configuration as {value, source} groups.
	Config func() any
	// Events returns the most recent lifecycle events, oldest first.
	Events func() []any
	// Budgets returns spawn budgets for DUMP.
	Budgets func() []any
	// Extra is merged into STATUS JSON (config reload state).
	Extra func() map[string]any
	Now   func() time.Time
}

// Serve implements serve.Admin.
func (h *Handler) Serve(_ context.Context, req *wirepb.AdminRequest) *wirepb.AdminReply {
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
		state := "ready"
		if !h.ready() {
			state = "draining"
		}
		return h.json("list_instances", map[string]any{"instances": []map[string]any{{
			"broker_instance": h.Instance, "pipe": h.Pipe, "pid": os.Getpid(), "state": state,
		}}})
	case wirepb.AdminVerb_BACKEND_HEALTH:
		return h.json("backend_health", h.backendHealth(req.ServiceName))
	case wirepb.AdminVerb_DUMP:
		return h.json("dump", h.dump())
	case wirepb.AdminVerb_CONFIG:
		var values any = map[string]any{}
		if h.Config != nil {
			values = h.Config()
		}
		return h.json("config", map[string]any{"values": values})
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

func (h *Handler) status() map[string]any {
	backends := []map[string]any{}
	for _, b := range h.backends() {
		backends = append(backends, map[string]any{
			"service_name": b.Key.Service, "service_version": b.Key.Version, "pid": b.PID,
			"backend_pipe": b.Pipe, "last_active_unix_ms": lastActive(b), "state": state(b),
			"mode": b.Mode, "instance": b.Key.Instance,
		})
	}
	st := map[string]any{
		"broker_instance":  h.Instance,
		"broker_pid":       os.Getpid(),
		"uptime_seconds":   int64(h.now().Sub(h.Shared.Started()).Seconds()),
		"accepting_hello":  h.ready(),
		"connections_open": h.Shared.ConnectionsOpen(),
		"fd_pressure":      map[string]any{"demoted": h.Shared.FD.Demoted()},
		"backends":         backends,
	}
	if h.Extra != nil {
		for k, v := range h.Extra() {
			st[k] = v
		}
	}
	return st
}

func (h *Handler) backendHealth(service string) map[string]any {
	out := []map[string]any{}
	for _, b := range h.backends() {
		if service != "" && b.Key.Service != service {
			continue
		}
		var last int64
		if t := b.LastHello(); !t.IsZero() {
			last = t.UnixMilli()
		}
		out = append(out, map[string]any{
			"service_version": b.Key.Version, "pid": b.PID, "state": state(b),
			"last_hello_unix_ms": last, "last_error": b.LastError(),
		})
	}
	return map[string]any{"service_name": service, "backends": out}
}

func (h *Handler) dump() map[string]any {
	table := []map[string]any{}
	for _, b := range h.backends() {
		table = append(table, map[string]any{
			"broker_instance": b.Key.Instance, "service_name": b.Key.Service, "service_version": b.Key.Version,
			"exe_hash": fmt.Sprintf("%x", b.Key.ExeHash), "pid": b.PID, "backend_pipe": b.Pipe,
			"started_unix_ms": b.Started.UnixMilli(), "last_active_unix_ms": lastActive(b), "state": state(b), "mode": b.Mode,
		})
	}
	d := map[string]any{
		"backend_table":           table,
		"spawn_budgets":           orEmpty(h.Budgets),
		"recent_lifecycle_events": orEmpty(h.Events),
		"effective_config":        map[string]any{},
		"connections_open":        h.Shared.ConnectionsOpen(),
		"hellos_in_flight":        h.Shared.HellosInFlight(),
	}
	if h.Config != nil {
		d["effective_config"] = h.Config()
	}
	return d
}

func orEmpty(f func() []any) []any {
	if f == nil {
		return []any{}
	}
	if v := f(); v != nil {
		return v
	}
	return []any{}
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

func (h *Handler) json(command string, body map[string]any) *wirepb.AdminReply {
	body["schema_version"] = 1
	body["command"] = command
	body["generated_at_unix_ms"] = h.now().UnixMilli()
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		return text("encode "+command+": "+err.Error()+"\n", 1)
	}
	return &wirepb.AdminReply{Kind: wirepb.AdminReplyKind_JSON, Body: string(b) + "\n", ContentType: contentJSON}
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
