package admin

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

var testNow = time.UnixMilli(1_700_000_000_000)

// fixture is a handler over a registry holding one live registered backend (a real
// sleeping process watched through its pidfd), one launched backend, and a recorded
// spawn failure of a version that never came up.
func fixture(t *testing.T) *Handler {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	proc, err := registry.WatchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Close() })
	reg := registry.New()
	reg.Add(registry.NewBackend(registry.Key{Instance: "private:zc", Service: "zc", Version: "1.0.0"}, "/tmp/be.sock", proc, "registered"))
	reg.Add(registry.NewBackend(registry.Key{Instance: "shared", Service: "ln", Version: "2.0.0"}, "/tmp/ln.sock", nil, "launch"))
	reg.NoteError(registry.Target{Instance: "private:zc", Service: "zc", Version: "1.0.0"}, "probe: connection refused", testNow)
	reg.NoteError(registry.Target{Instance: "shared", Service: "ln", Version: "3.0.0"}, "spawn: exit status 3", testNow)
	ok := true
	return &Handler{
		Instance: "private:zc", Pipe: "/tmp/ctl.sock", Shared: serve.NewShared(nil, nil), Registry: reg,
		Metrics: func() (string, error) { return "# EOF\n", nil },
		Config: func() EffectiveConfig {
			return EffectiveConfig{
				Broker:   map[string]ConfigValue{"log_level": {"info", "default"}},
				Services: map[string]map[string]ConfigValue{"zc": {"mode": {"registered", "config-file"}}},
				Protocol: map[string]ConfigValue{"framing_version": {1, "protocol-v1"}},
			}
		},
		Events: func() []*wirepb.LifecycleEvent {
			return []*wirepb.LifecycleEvent{{TsMs: 1_700_000_000_123, Pid: 42, ServiceName: "ln", Kind: wirepb.EventKind_DIED_CRASH,
				Reason: "exit status 3", Extra: map[string]string{"version": "2.0.0"}, SeverityNumber: 17, SeverityText: "ERROR"}}
		},
		Budgets: func() []SpawnBudget {
			return []SpawnBudget{{BrokerInstance: "shared", ServiceName: "ln", ServiceVersion: "3.0.0", AttemptsUsed: 3, RetryAfterMS: 900}}
		},
		Reload: func() ReloadStatus {
			return ReloadStatus{Attempts: 1, OK: &ok, AtUnixMS: 1_700_000_000_000, Plan: []string{"unchanged zc"}}
		},
		Services: func() []ServiceStatus {
			return []ServiceStatus{
				{Name: "zc", Mode: "registered", Socket: "/tmp/ctl.sock", Instance: "private:zc", State: StateServing, Hellos: 5, Refusals: 1},
				{Name: "*", Mode: "launch", Socket: "/tmp/any.sock", Instance: "shared", State: StateBinding, Reason: "address in use"},
			}
		},
		Now: func() time.Time { return testNow },
	}
}

// keys lists the keys of the JSON object at path (dot-separated; a number picks an
// array element) in a reply body.
func keys(t *testing.T, body, path string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, body)
	}
	for _, p := range strings.Split(path, ".") {
		if p == "" {
			continue
		}
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i := int(p[0] - '0')
			if i >= len(x) {
				t.Fatalf("%s: index %d of %d", path, i, len(x))
			}
			v = x[i]
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is %T, not an object:\n%s", path, v, body)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var envelope = []string{"command", "generated_at_unix_ms", "schema_version"}

// The JSON keys are exactly those v1 clients read (plus ours, named here), at every level.
func TestReplyKeys(t *testing.T) {
	h := fixture(t)
	for _, tc := range []struct {
		verb wirepb.AdminVerb
		path string
		want []string
	}{
		{wirepb.AdminVerb_STATUS, "", append([]string{"accepting_hello", "backends", "broker_instance", "broker_pid", "config_reload", "connections_open", "fd_pressure", "generation", "services", "uptime_seconds"}, envelope...)},
		{wirepb.AdminVerb_STATUS, "fd_pressure", []string{"demoted"}},
		{wirepb.AdminVerb_STATUS, "backends.0", []string{"backend_pipe", "instance", "last_active_unix_ms", "mode", "pid", "service_name", "service_version", "started_unix_ms", "state"}},
		{wirepb.AdminVerb_STATUS, "config_reload", []string{"at_unix_ms", "attempts", "ok", "plan"}},
		{wirepb.AdminVerb_STATUS, "services.1", []string{"backends", "connections_open", "hellos", "instance", "mode", "name", "reason", "refusals", "socket", "state"}},
		{wirepb.AdminVerb_LIST_INSTANCES, "", append([]string{"instances"}, envelope...)},
		{wirepb.AdminVerb_LIST_INSTANCES, "instances.0", []string{"broker_instance", "pid", "pipe", "state"}},
		{wirepb.AdminVerb_BACKEND_HEALTH, "", append([]string{"backends", "service_name"}, envelope...)},
		{wirepb.AdminVerb_BACKEND_HEALTH, "backends.0", []string{"last_error", "last_hello_unix_ms", "pid", "service_name", "service_version", "state"}},
		{wirepb.AdminVerb_DUMP, "", append([]string{"backend_table", "connections_open", "effective_config", "hellos_in_flight", "recent_lifecycle_events", "spawn_budgets"}, envelope...)},
		{wirepb.AdminVerb_DUMP, "backend_table.0", []string{"backend_pipe", "broker_instance", "exe_hash", "last_active_unix_ms", "mode", "pid", "service_name", "service_version", "started_unix_ms", "state"}},
		{wirepb.AdminVerb_DUMP, "spawn_budgets.0", []string{"attempts_used", "broker_instance", "in_flight", "remaining", "retry_after_ms", "service_name", "service_version"}},
		{wirepb.AdminVerb_DUMP, "recent_lifecycle_events.0", []string{"broker_instance", "connection_id", "extra", "kind", "pid", "reason", "request_id", "service_name", "severity_number", "severity_text", "ts_ms"}},
		{wirepb.AdminVerb_DUMP, "effective_config", []string{"broker", "protocol", "services"}},
		{wirepb.AdminVerb_CONFIG, "", append([]string{"values"}, envelope...)},
		{wirepb.AdminVerb_CONFIG, "values.broker.log_level", []string{"source", "value"}},
		{wirepb.AdminVerb_DIAGNOSE, "", append([]string{"bundle", "status"}, envelope...)},
		{wirepb.AdminVerb_DIAGNOSE, "bundle", []string{"contents", "written"}},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: tc.verb, Json: true})
		want := slices.Sorted(slices.Values(tc.want))
		if got := keys(t, r.Body, tc.path); !slices.Equal(got, want) {
			t.Errorf("%s %q keys:\n got  %v\n want %v", tc.verb, tc.path, got, want)
		}
	}
}

// Keys come out sorted at every level and the envelope carries the verb's v1 name.
func TestEncodeSortsKeys(t *testing.T) {
	b, err := Encode("backend_health", 7, BackendHealthReply{ServiceName: "zc", Backends: []BackendHealth{{ServiceVersion: "1", PID: 3, State: "down", LastError: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "backends": [
    {
      "last_error": "x",
      "last_hello_unix_ms": 0,
      "pid": 3,
      "service_name": "",
      "service_version": "1",
      "state": "down"
    }
  ],
  "command": "backend_health",
  "generated_at_unix_ms": 7,
  "schema_version": 1,
  "service_name": "zc"
}
`
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
}
