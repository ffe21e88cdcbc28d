package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Human renders the JSON reply body of verb as text for a person: the CLI's form of a
// verb whose v1 reply is always JSON. It fails on a body that is not such a reply.
func Human(verb wirepb.AdminVerb, body []byte) (string, error) {
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return "", fmt.Errorf("decode %s reply: %w", verb, err)
	}
	now := time.UnixMilli(env.GeneratedAtUnixMS)
	var b bytes.Buffer
	var err error
	switch verb {
	case wirepb.AdminVerb_STATUS:
		var r StatusReply
		if err = json.Unmarshal(body, &r); err == nil {
			r.WriteTable(&b, now)
		}
	case wirepb.AdminVerb_LIST_INSTANCES:
		var r ListInstancesReply
		if err = json.Unmarshal(body, &r); err == nil {
			table(&b, []string{"INSTANCE", "PID", "STATE", "PIPE"}, func(row func(...any)) {
				for _, i := range r.Instances {
					row(i.BrokerInstance, i.PID, i.State, i.Pipe)
				}
			})
		}
	case wirepb.AdminVerb_BACKEND_HEALTH:
		var r BackendHealthReply
		if err = json.Unmarshal(body, &r); err == nil {
			r.write(&b, now)
		}
	case wirepb.AdminVerb_DUMP:
		var r DumpReply
		if err = json.Unmarshal(body, &r); err == nil {
			r.write(&b, now)
		}
	case wirepb.AdminVerb_CONFIG:
		var r ConfigReply
		if err = json.Unmarshal(body, &r); err == nil {
			r.Values.write(&b)
		}
	case wirepb.AdminVerb_DIAGNOSE:
		var r DiagnoseReply
		if err = json.Unmarshal(body, &r); err == nil {
			if r.Bundle.Written {
				fmt.Fprintf(&b, "bundle written to %s (%d bytes): %s\n", r.Bundle.Path, r.Bundle.Bytes, strings.Join(r.Bundle.Contents, ", "))
			} else {
				fmt.Fprintf(&b, "bundle not written (give --output PATH); it holds: %s\n", strings.Join(r.Bundle.Contents, ", "))
			}
		}
	default:
		return "", fmt.Errorf("%s has no JSON reply", verb)
	}
	if err != nil {
		return "", fmt.Errorf("decode %s reply: %w", verb, err)
	}
	return b.String(), nil
}

// WriteTable writes the broker line, one row per service and one per backend: what
// `broker status` prints.
func (r StatusReply) WriteTable(w io.Writer, now time.Time) {
	accepting := "accepting Hellos"
	if !r.AcceptingHello {
		accepting = "NOT accepting Hellos (draining or fd pressure)"
	}
	fmt.Fprintf(w, "broker pid %d, up %s, %s, open connections: %d\n", r.BrokerPID,
		time.Duration(r.UptimeSeconds)*time.Second, accepting, r.ConnectionsOpen)
	if c := r.ConfigReload; c != nil && c.OK != nil {
		res := "ok"
		if !*c.OK {
			res = "FAILED: " + c.Error
		}
		fmt.Fprintf(w, "last reload %s: %s\n", time.UnixMilli(c.AtUnixMS).Format(time.DateTime), res)
	}
	fmt.Fprintln(w)
	services := r.Services
	if len(services) == 0 { // a broker that reports no services: the asked socket's view
		services = []ServiceStatus{{Name: r.BrokerInstance, State: "?", Backends: r.Backends, ConnectionsOpen: r.ConnectionsOpen}}
	}
	table(w, []string{"SERVICE", "MODE", "STATE", "CONNS", "HELLOS", "REFUSED", "SOCKET"}, func(row func(...any)) {
		for _, s := range services {
			st := s.State
			if s.Reason != "" {
				st += ": " + s.Reason
			}
			row(s.Name, s.Mode, st, s.ConnectionsOpen, s.Hellos, s.Refusals, s.Socket)
		}
	})
	fmt.Fprintln(w)
	var anyBackend bool
	table(w, []string{"BACKEND", "VERSION", "PID", "STATE", "UPTIME", "VIA", "PIPE"}, func(row func(...any)) {
		for _, s := range services {
			for _, b := range s.Backends {
				anyBackend = true
				row(b.ServiceName, b.ServiceVersion, b.PID, b.State, uptime(now, b.StartedUnixMS), s.Name, b.BackendPipe)
			}
		}
	})
	if !anyBackend {
		fmt.Fprintln(w, "(no live backends)")
	}
}

func (r BackendHealthReply) write(w io.Writer, now time.Time) {
	if len(r.Backends) == 0 {
		fmt.Fprintln(w, "no backends")
		return
	}
	table(w, []string{"SERVICE", "VERSION", "PID", "STATE", "LAST HELLO", "LAST ERROR"}, func(row func(...any)) {
		for _, b := range r.Backends {
			name := b.ServiceName
			if name == "" {
				name = r.ServiceName
			}
			last := "never"
			if b.LastHelloUnixMS > 0 {
				last = uptime(now, b.LastHelloUnixMS) + " ago"
			}
			row(name, b.ServiceVersion, b.PID, b.State, last, orDash(b.LastError))
		}
	})
}

func (d DumpReply) write(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "connections open: %d, Hellos in flight: %d\n\nbackends:\n", d.ConnectionsOpen, d.HellosInFlight)
	table(w, []string{"  SERVICE", "VERSION", "PID", "STATE", "MODE", "UPTIME", "INSTANCE", "PIPE"}, func(row func(...any)) {
		for _, b := range d.BackendTable {
			row("  "+b.ServiceName, b.ServiceVersion, b.PID, b.State, b.Mode, uptime(now, b.StartedUnixMS), b.BrokerInstance, b.BackendPipe)
		}
	})
	fmt.Fprintln(w, "\nspawn budgets:")
	table(w, []string{"  SERVICE", "VERSION", "USED", "LEFT", "IN FLIGHT", "RETRY AFTER"}, func(row func(...any)) {
		for _, b := range d.SpawnBudgets {
			row("  "+b.ServiceName, b.ServiceVersion, b.AttemptsUsed, b.Remaining, b.InFlight, time.Duration(b.RetryAfterMS)*time.Millisecond)
		}
	})
	fmt.Fprintln(w, "\nrecent lifecycle events:")
	for _, e := range d.RecentLifecycleEvents {
		fmt.Fprintln(w, "  "+e.Line(time.Local))
	}
	fmt.Fprintln(w, "\neffective config:")
	d.EffectiveConfig.write(w)
}

func (c EffectiveConfig) write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	group := func(prefix string, m map[string]ConfigValue) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(tw, "%s%s\t%v\t(%s)\n", prefix, k, m[k].Value, m[k].Source)
		}
	}
	group("broker.", c.Broker)
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		group(fmt.Sprintf("service[%q].", name), c.Services[name])
	}
	group("protocol.", c.Protocol)
	tw.Flush()
}

// Line is the event as one human line: local time with milliseconds, kind, then the
// fields that are set.
func (e LifecycleEvent) Line(loc *time.Location) string {
	var b strings.Builder
	b.WriteString(time.UnixMilli(int64(e.TsMS)).In(loc).Format("2006-01-02 15:04:05.000"))
	b.WriteString(" " + e.Kind)
	field := func(k, v string) {
		if v != "" {
			b.WriteString(" " + k + "=" + quote(v))
		}
	}
	field("service", e.ServiceName)
	field("version", e.Extra["version"])
	if e.PID != 0 {
		field("pid", strconv.FormatUint(uint64(e.PID), 10))
	}
	field("instance", e.BrokerInstance)
	field("request_id", e.RequestID)
	field("reason", e.Reason)
	return b.String()
}

func quote(s string) string {
	if strings.ContainsAny(s, " \t\"=") || !strconv.CanBackquote(s) {
		return strconv.Quote(s)
	}
	return s
}

// table writes rows under a header, columns aligned.
func table(w io.Writer, header []string, rows func(row func(...any))) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	rows(func(cells ...any) {
		s := make([]string, len(cells))
		for i, c := range cells {
			s[i] = fmt.Sprint(c)
		}
		fmt.Fprintln(tw, strings.Join(s, "\t"))
	})
	tw.Flush()
}

func uptime(now time.Time, sinceMS int64) string {
	if sinceMS <= 0 {
		return "-"
	}
	return max(now.Sub(time.UnixMilli(sinceMS)), 0).Round(time.Second).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
