package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Plan is what a reload must do to go from one Config to the next. The supervisor applies
// it; Diff only describes it.
type Plan struct {
	Broker    []Change        // [broker] keys that changed
	Added     []Service       // in the new file's order
	Removed   []Service       // in the old file's order
	Changed   []ServiceChange // in the new file's order
	Unchanged []string        // names, in the new file's order
}

// Change is one key whose value changed, rendered for humans.
type Change struct {
	Key, Old, New string
	// NeedsRestart marks a [broker] key the running broker cannot take: the new value
	// applies only after a restart (the plan line says so).
	NeedsRestart bool
}

// ServiceChange is a service present in both configs with different settings.
type ServiceChange struct {
	Name     string
	Old, New Service
	Fields   []Change
	// Effect is what applying the change takes: the strongest effect of its fields. The
	// supervisor acts on it and the plan line shows it, so the two cannot disagree.
	Effect Effect
}

// Effect is what applying a service change takes, weakest first.
type Effect int

const (
	// InPlace: handler settings (limits, timeouts) are swapped into the running loop.
	InPlace Effect = iota
	// NewBackend: a new backend verifier or router; the socket and its open connections stay.
	NewBackend
	// Rebind: a new socket, bound before the old loop retires.
	Rebind
)

func (e Effect) String() string {
	switch e {
	case NewBackend:
		return "new backend, socket and connections kept"
	case Rebind:
		return "rebind"
	}
	return "in place"
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool {
	return len(p.Broker) == 0 && len(p.Added) == 0 && len(p.Removed) == 0 && len(p.Changed) == 0
}

// Equal compares every setting of two services.
func (s Service) Equal(o Service) bool {
	return s.Name == o.Name && s.Mode == o.Mode && s.Socket == o.Socket &&
		s.Version == o.Version && s.BackendEndpoint == o.BackendEndpoint &&
		s.HandoffEndpoint == o.HandoffEndpoint && s.Verify == o.Verify &&
		s.MaxConnections == o.MaxConnections && s.IdleTimeout == o.IdleTimeout &&
		s.StartTimeout == o.StartTimeout
}

// serviceFields lists every Service setting with whether changing it needs a restart of
// the loop. Handler-only settings (limits and timeouts) are read per connection or per
// backend, so the running loop can take them in place.
var serviceFields = []struct {
	key    string
	effect Effect
	get    func(Service) string
}{
	{"mode", NewBackend, func(s Service) string { return s.Mode }},
	{"socket", Rebind, func(s Service) string { return s.Socket }},
	{"version", NewBackend, func(s Service) string { return s.Version }},
	{"backend_endpoint", NewBackend, func(s Service) string { return s.BackendEndpoint }},
	{"handoff_endpoint", NewBackend, func(s Service) string { return s.HandoffEndpoint }},
	{"verify", NewBackend, func(s Service) string { return s.Verify }},
	{"max_connections", InPlace, func(s Service) string { return strconv.Itoa(s.MaxConnections) }},
	{"idle_timeout", InPlace, func(s Service) string { return s.IdleTimeout.String() }},
	{"start_timeout", InPlace, func(s Service) string { return s.StartTimeout.String() }},
}

// Diff compares two configs by service name. It is pure: it reads only its arguments.
func Diff(old, new *Config) Plan {
	var p Plan
	p.Broker = diffBroker(old.Broker, new.Broker)
	olds := make(map[string]Service, len(old.Services))
	for _, s := range old.Services {
		olds[s.Name] = s
	}
	seen := make(map[string]bool, len(new.Services))
	for _, n := range new.Services {
		seen[n.Name] = true
		o, ok := olds[n.Name]
		switch {
		case !ok:
			p.Added = append(p.Added, n)
		case o.Equal(n):
			p.Unchanged = append(p.Unchanged, n.Name)
		default:
			c := ServiceChange{Name: n.Name, Old: o, New: n}
			for _, f := range serviceFields {
				if a, b := f.get(o), f.get(n); a != b {
					c.Fields = append(c.Fields, Change{Key: f.key, Old: a, New: b})
					c.Effect = max(c.Effect, f.effect)
				}
			}
			p.Changed = append(p.Changed, c)
		}
	}
	for _, o := range old.Services {
		if !seen[o.Name] {
			p.Removed = append(p.Removed, o)
		}
	}
	return p
}

// diffBroker lists the [broker] keys that changed. Every key but two applies live.
// runtime_dir needs a restart: launched backends' sockets and the launcher's state live
// there. event_log needs a restart: the open log also holds the recent events served by
// admin DUMP, and reopening it would lose them for a path an operator rarely moves.
func diffBroker(o, n Broker) []Change {
	dur := func(d time.Duration) string { return d.String() }
	var out []Change
	for _, f := range []struct {
		key, a, b string
		restart   bool
	}{
		{"servicedef_dir", o.ServicedefDir, n.ServicedefDir, false},
		{"runtime_dir", o.RuntimeDir, n.RuntimeDir, true},
		{"log_format", o.LogFormat, n.LogFormat, false},
		{"log_level", o.LogLevel, n.LogLevel, false},
		{"hello_timeout", dur(o.HelloTimeout), dur(n.HelloTimeout), false},
		{"hello_rate_limit", strconv.Itoa(o.HelloRateLimit), strconv.Itoa(n.HelloRateLimit), false},
		{"shutdown_grace", dur(o.ShutdownGrace), dur(n.ShutdownGrace), false},
		{"event_log", o.EventLog, n.EventLog, true},
	} {
		if f.a != f.b {
			out = append(out, Change{Key: f.key, Old: f.a, New: f.b, NeedsRestart: f.restart})
		}
	}
	return out
}

// Lines renders the plan one line per [broker] change and per service: broker changes
// (each "applied live" or "needs restart"), then removed, changed, added and unchanged
// services.
func (p Plan) Lines() []string {
	var out []string
	for _, c := range p.Broker {
		how := "applied live"
		if c.NeedsRestart {
			how = "needs restart; the running broker keeps " + quote(c.Old)
		}
		out = append(out, fmt.Sprintf("broker: %s (%s)", c, how))
	}
	for _, s := range p.Removed {
		out = append(out, fmt.Sprintf("removed %s (%s)", s.Name, s.Summary()))
	}
	for _, c := range p.Changed {
		fields := make([]string, len(c.Fields))
		for i, f := range c.Fields {
			fields[i] = f.String()
		}
		out = append(out, fmt.Sprintf("changed %s: %s (%s)", c.Name, strings.Join(fields, ", "), c.Effect))
	}
	for _, s := range p.Added {
		out = append(out, fmt.Sprintf("added %s (%s)", s.Name, s.Summary()))
	}
	for _, n := range p.Unchanged {
		out = append(out, "unchanged "+n)
	}
	return out
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s → %s", c.Key, quote(c.Old), quote(c.New))
}

// quote shows an empty value as "" so that a line never ends in a bare arrow.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// Summary is a one-line description: mode, socket and the mode's key settings.
func (s Service) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, socket %s", s.Mode, s.Socket)
	if s.Mode == ModeRegistered {
		fmt.Fprintf(&b, ", version %s, backend %s, verify %s", s.Version, s.BackendEndpoint, s.Verify)
	} else {
		fmt.Fprintf(&b, ", idle_timeout %s, start_timeout %s", s.IdleTimeout, s.StartTimeout)
	}
	if s.HandoffEndpoint != "" {
		fmt.Fprintf(&b, ", handoff %s", s.HandoffEndpoint)
	}
	fmt.Fprintf(&b, ", max_connections %d", s.MaxConnections)
	return b.String()
}
