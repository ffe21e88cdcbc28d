package admin

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestVerbs(t *testing.T) {
	h := fixture(t)
	for _, tc := range []struct {
		verb        wirepb.AdminVerb
		json        bool
		exit        uint32
		contentType string
		body        []string
	}{
		{wirepb.AdminVerb_HEALTHZ, false, 0, "text/plain", []string{"ok\n"}},
		{wirepb.AdminVerb_READYZ, false, 0, "text/plain", []string{"ready\n"}},
		{wirepb.AdminVerb_STATUS, false, 0, "text/plain", []string{"broker_instance: private:zc\naccepting_hello: true\n"}},
		{wirepb.AdminVerb_STATUS, true, 0, "application/json", []string{`"schema_version": 1`, `"command": "status"`, `"generated_at_unix_ms": 1700000000000`, `"service_name": "zc"`, `"backend_pipe": "/tmp/be.sock"`, `"connections_open": 0`}},
		{wirepb.AdminVerb_LIST_INSTANCES, false, 0, "application/json", []string{`"pipe": "/tmp/ctl.sock"`, `"state": "ready"`}},
		{wirepb.AdminVerb_BACKEND_HEALTH, false, 0, "application/json", []string{`"service_version": "1.0.0"`}},
		{wirepb.AdminVerb_DUMP, false, 0, "application/json", []string{`"retry_after_ms": 900`, `"kind": "DIED_CRASH"`, `"source": "protocol-v1"`}},
		{wirepb.AdminVerb_CONFIG, false, 0, "application/json", []string{`"value": "registered"`}},
		{wirepb.AdminVerb_METRICS, false, 0, "application/openmetrics-text", []string{"# EOF\n"}},
		{wirepb.AdminVerb_SHUTDOWN, false, 0, "text/plain", []string{"broker shutting down\n"}},
		{wirepb.AdminVerb(99), false, 2, "text/plain", []string{"unsupported admin verb\n"}},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: tc.verb, Json: tc.json})
		if r.ExitCode != tc.exit || r.ContentType != tc.contentType {
			t.Errorf("%s: exit %d type %q", tc.verb, r.ExitCode, r.ContentType)
		}
		for _, want := range tc.body {
			if !strings.Contains(r.Body, want) {
				t.Errorf("%s: body lacks %q:\n%s", tc.verb, want, r.Body)
			}
		}
		if tc.contentType == "application/json" && !json.Valid([]byte(r.Body)) {
			t.Errorf("%s: invalid JSON", tc.verb)
		}
	}
	h.Shared.Drain()
	if r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_READYZ}); r.Body != "not ready\n" || r.ExitCode != 1 {
		t.Fatalf("readyz while draining: %q %d", r.Body, r.ExitCode)
	}
}

// A handler with nothing wired reports empty parts in the v1 shapes: [] and {}, never null.
func TestEmptyHandler(t *testing.T) {
	h := &Handler{Instance: "shared", Shared: serve.NewShared(nil, nil)}
	for verb, want := range map[wirepb.AdminVerb][]string{
		wirepb.AdminVerb_STATUS:         {`"backends": []`},
		wirepb.AdminVerb_BACKEND_HEALTH: {`"backends": []`},
		wirepb.AdminVerb_DUMP:           {`"backend_table": []`, `"spawn_budgets": []`, `"recent_lifecycle_events": []`, `"effective_config": {}`},
		wirepb.AdminVerb_CONFIG:         {`"values": {}`},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: verb, Json: true})
		for _, w := range want {
			if !strings.Contains(r.Body, w) {
				t.Errorf("%s lacks %s:\n%s", verb, w, r.Body)
			}
		}
	}
}

// BACKEND_HEALTH carries the last error recorded for each backend's version, and a
// version that failed with no live backend is reported down with its error.
func TestBackendHealthLastError(t *testing.T) {
	h := fixture(t)
	for _, tc := range []struct {
		service string
		want    []BackendHealth
	}{
		{"zc", []BackendHealth{{ServiceName: "zc", ServiceVersion: "1.0.0", State: "running", LastError: "probe: connection refused"}}},
		{"ln", []BackendHealth{
			{ServiceName: "ln", ServiceVersion: "2.0.0", State: "running"},
			{ServiceName: "ln", ServiceVersion: "3.0.0", State: "down", LastError: "spawn: exit status 3"},
		}},
		{"nope", []BackendHealth{}},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_BACKEND_HEALTH, ServiceName: tc.service})
		var got BackendHealthReply
		if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
			t.Fatal(err)
		}
		for i := range got.Backends {
			got.Backends[i].PID = 0 // the fixture's sleeper
		}
		if got.ServiceName != tc.service || len(got.Backends) != len(tc.want) {
			t.Fatalf("%s: %+v", tc.service, got)
		}
		for i := range tc.want {
			if got.Backends[i] != tc.want[i] {
				t.Errorf("%s[%d] = %+v, want %+v", tc.service, i, got.Backends[i], tc.want[i])
			}
		}
	}
}

// STATUS lists every service with the backends of its own instance.
func TestStatusServices(t *testing.T) {
	h := fixture(t)
	r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
	var st StatusReply
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 2 || len(st.Backends) != 2 {
		t.Fatalf("%+v", st)
	}
	for _, s := range st.Services {
		if len(s.Backends) != 1 || s.Backends[0].Instance != s.Instance {
			t.Errorf("service %s: backends %+v", s.Name, s.Backends)
		}
	}
}

func TestVerbByName(t *testing.T) {
	for name, want := range map[string]wirepb.AdminVerb{
		"status": wirepb.AdminVerb_STATUS, "backend-health": wirepb.AdminVerb_BACKEND_HEALTH,
		"list-instances": wirepb.AdminVerb_LIST_INSTANCES, "SHUTDOWN": wirepb.AdminVerb_SHUTDOWN,
	} {
		if got, ok := VerbByName(name); !ok || got != want {
			t.Errorf("VerbByName(%q) = %v, %v", name, got, ok)
		}
	}
	for _, bad := range []string{"", "nope", "admin-verb-unspecified"} {
		if _, ok := VerbByName(bad); ok {
			t.Errorf("VerbByName(%q) accepted", bad)
		}
	}
}

func TestDiagnoseWritesBundle(t *testing.T) {
	h := &Handler{Instance: "shared", Shared: serve.NewShared(nil, nil), Registry: registry.New(),
		Metrics: func() (string, error) { return "# EOF\n", nil }}
	path := t.TempDir() + "/bundle.json"
	r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_DIAGNOSE, OutputPath: path})
	if r.ExitCode != 0 || !strings.Contains(r.Body, `"written": true`) {
		t.Fatalf("diagnose: %d %s", r.ExitCode, r.Body)
	}
	b, err := os.ReadFile(path)
	if err != nil || !json.Valid(b) || !strings.Contains(string(b), `"metrics": "# EOF\n"`) {
		t.Fatalf("bundle: %v %s", err, b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle mode %v", fi.Mode())
	}
	for _, bad := range []string{path, "relative.json"} { // existing file, relative path
		if r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_DIAGNOSE, OutputPath: bad}); r.ExitCode != 1 {
			t.Errorf("diagnose to %q: exit %d %s", bad, r.ExitCode, r.Body)
		}
	}
}
