package config

import (
	"fmt"
	"strconv"

	"github.com/rpbroker/broker/internal/tomltype"
	"github.com/rpbroker/broker/wire/names"
)

// Keys that only make sense in one mode.
var (
	// handoff_endpoint is registered-only: a launched backend gets no handoff socket from
	// the v1 environment, so the broker would have nowhere verified to send fds.
	registeredOnly = []string{"version", "backend_endpoint", "verify", "handoff_endpoint"}
	launchOnly     = []string{"idle_timeout", "start_timeout"}
)

// services decodes the [[service]] array, applies defaults and checks each service, then
// checks the services against each other.
func (d *decoder) services(cfg *Config, v any, present bool) {
	var tables []any
	switch x := v.(type) {
	case []any:
		tables = x
	case []map[string]any:
		for _, m := range x {
			tables = append(tables, m)
		}
	case nil:
	default:
		d.errf("service", "is %s; want [[service]] tables (note the double brackets)", tomltype.Describe(v))
		return
	}
	if !present || len(tables) == 0 {
		d.errf("service", "no [[service]] tables; at least one is required")
		return
	}
	labels := make([]string, 0, len(tables))
	for i, t := range tables {
		m, ok := t.(map[string]any)
		label := fmt.Sprintf("service[%d]", i+1)
		if !ok {
			d.errf(label, "is %s; want a table", tomltype.Describe(t))
			continue
		}
		if n, ok := m["name"].(string); ok && n != "" {
			label += " " + strconv.Quote(n)
		}
		cfg.Services = append(cfg.Services, d.service(cfg, label, m))
		labels = append(labels, label)
	}
	d.crossCheck(cfg.Services, labels)
}

// service decodes one [[service]] table; label is `service[N] "name"`.
func (d *decoder) service(cfg *Config, label string, m map[string]any) Service {
	d.unknown(m, serviceKeys, label+".")
	s := source{m: m, label: func(k string) string { return label + "." + k }}
	var svc Service

	if !s.has("name") {
		d.errf(label+".name", "missing; want a service name, or \"*\" in launch mode")
	} else if n, ok := d.str(s, "name"); ok {
		if n != AnyService && !names.ValidService(n) {
			d.errf(label+".name", "%q is not a valid service name: want 1 to 64 of [a-z0-9-], or \"*\" in launch mode", n)
		} else {
			svc.Name = n
		}
	}
	if !s.has("mode") {
		d.errf(label+".mode", "missing; want one of %s, %s", ModeRegistered, ModeLaunch)
	} else {
		svc.Mode, _ = d.oneOf(s, "mode", ModeRegistered, ModeLaunch)
	}

	svc.Socket, _ = d.path(s, "socket")
	svc.HandoffEndpoint, _ = d.path(s, "handoff_endpoint")
	svc.MaxConnections = DefaultMaxConnections
	if s.has("max_connections") {
		svc.MaxConnections, _ = d.integer(s, "max_connections", 1)
	}

	switch svc.Mode {
	case ModeRegistered:
		d.registered(s, &svc)
	case ModeLaunch:
		d.launch(s, &svc)
	}

	for _, ep := range []struct{ key, path string }{
		{"socket", svc.Socket}, {"backend_endpoint", svc.BackendEndpoint}, {"handoff_endpoint", svc.HandoffEndpoint},
	} {
		if ep.path == "" {
			continue
		}
		if err := names.CheckSocketPath(ep.path); err != nil {
			d.wrap(label+"."+ep.key, err)
		}
	}
	if svc.Socket == "" && !setNonEmpty("socket", s) && svc.Name != "" && cfg.Broker.RuntimeDir != "" {
		svc.Socket = d.defaultSocket(label, cfg.Broker.RuntimeDir, svc.Name)
	}
	return svc
}

func (d *decoder) registered(s source, svc *Service) {
	if svc.Name == AnyService {
		d.errf(s.label("name"), "\"*\" is only allowed with mode = \"launch\"")
	}
	if !s.has("version") {
		d.errf(s.label("version"), "missing; registered mode needs the backend's version")
	} else if v, ok := d.str(s, "version"); ok {
		if err := names.CheckVersion(v); err != nil {
			d.wrap(s.label("version"), err)
		} else {
			svc.Version = v
		}
	}
	if !s.has("backend_endpoint") {
		d.errf(s.label("backend_endpoint"), "missing; registered mode needs the backend's socket path")
	} else {
		svc.BackendEndpoint, _ = d.path(s, "backend_endpoint")
		if v, _ := s.m["backend_endpoint"].(string); v == "" {
			d.errf(s.label("backend_endpoint"), "empty; registered mode needs the backend's socket path")
		}
	}
	svc.Verify = VerifyProbe
	if s.has("verify") {
		svc.Verify, _ = d.oneOf(s, "verify", VerifyProbe, VerifyConnect)
	}
	for _, k := range launchOnly {
		if s.has(k) {
			d.errf(s.label(k), "not allowed with mode = \"registered\" (launch only): the broker does not start registered backends")
		}
	}
}

func (d *decoder) launch(s source, svc *Service) {
	for _, k := range registeredOnly {
		if s.has(k) {
			d.errf(s.label(k), "not allowed with mode = \"launch\" (registered only): launched backends come from their servicedef")
		}
	}
	if s.has("idle_timeout") {
		svc.IdleTimeout, _ = d.duration(s, "idle_timeout", false)
	}
	svc.StartTimeout = DefaultStartTimeout
	if s.has("start_timeout") {
		svc.StartTimeout, _ = d.duration(s, "start_timeout", true)
	}
}

// defaultSocket is the v1 canonical path: -shared for "*", -svc-<name> otherwise.
func (d *decoder) defaultSocket(label, runtimeDir, name string) string {
	l, err := d.layout(runtimeDir)
	if err != nil {
		d.errf(label+".socket", "no default socket path: %v; set socket", err)
		return ""
	}
	l.Dir = runtimeDir
	leaf := l.ServiceLeaf(name)
	if name == AnyService {
		leaf = l.SharedLeaf()
	}
	p, err := l.Path(leaf)
	if err != nil {
		d.wrap(label+".socket (default)", err)
		return ""
	}
	return p
}

// crossCheck rejects duplicate names, two services on one socket, and a control socket that
// is also some service's backend or handoff endpoint.
func (d *decoder) crossCheck(svcs []Service, labels []string) {
	byName := map[string]string{}
	bySocket := map[string]string{}
	endpoints := map[string]string{}
	for i, s := range svcs {
		if s.BackendEndpoint != "" {
			endpoints[s.BackendEndpoint] = labels[i] + ".backend_endpoint"
		}
		if s.HandoffEndpoint != "" {
			endpoints[s.HandoffEndpoint] = labels[i] + ".handoff_endpoint"
		}
	}
	for i, s := range svcs {
		if s.Name != "" {
			if first, ok := byName[s.Name]; ok {
				d.errf(labels[i]+".name", "duplicate: %s has the same name", first)
				continue // its default socket clashes too; one error is enough
			}
			byName[s.Name] = labels[i]
		}
		if s.Socket == "" {
			continue
		}
		if first, ok := bySocket[s.Socket]; ok {
			d.errf(labels[i]+".socket", "%s is already the socket of %s; each service needs its own", s.Socket, first)
		} else {
			bySocket[s.Socket] = labels[i]
		}
		if ep, ok := endpoints[s.Socket]; ok {
			d.errf(labels[i]+".socket", "%s is also %s", s.Socket, ep)
		}
	}
}
