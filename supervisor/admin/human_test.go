package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Every JSON verb has a human form built from its typed reply, holding the values an
// operator looks for; a body that is not that verb's reply is an error.
func TestHuman(t *testing.T) {
	h := fixture(t)
	for _, tc := range []struct {
		verb wirepb.AdminVerb
		want []string
	}{
		{wirepb.AdminVerb_STATUS, []string{"accepting Hellos", "last reload", "SERVICE", "zc", "registered", "serving", "binding: address in use", "/tmp/any.sock", "BACKEND", "/tmp/be.sock", "running"}},
		{wirepb.AdminVerb_LIST_INSTANCES, []string{"INSTANCE", "private:zc", "ready", "/tmp/ctl.sock"}},
		{wirepb.AdminVerb_BACKEND_HEALTH, []string{"LAST ERROR", "probe: connection refused", "spawn: exit status 3", "down"}},
		{wirepb.AdminVerb_DUMP, []string{"spawn budgets:", "ln", "900ms", "DIED_CRASH service=ln version=2.0.0 pid=42", `reason="exit status 3"`, "broker.log_level", "(default)"}},
		{wirepb.AdminVerb_CONFIG, []string{`service["zc"].mode`, "registered", "protocol.framing_version"}},
		{wirepb.AdminVerb_DIAGNOSE, []string{"bundle not written"}},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: tc.verb, Json: true})
		out, err := Human(tc.verb, []byte(r.Body))
		if err != nil {
			t.Fatalf("%s: %v", tc.verb, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: human form lacks %q:\n%s", tc.verb, w, out)
			}
		}
	}
	for _, bad := range []string{"ok\n", "[1]"} {
		if _, err := Human(wirepb.AdminVerb_STATUS, []byte(bad)); err == nil {
			t.Errorf("Human accepted %q", bad)
		}
	}
	if _, err := Human(wirepb.AdminVerb_HEALTHZ, []byte("{}")); err == nil {
		t.Error("Human rendered a text-only verb")
	}
}

func TestEventLine(t *testing.T) {
	e := EventOf(&wirepb.LifecycleEvent{TsMs: 1_700_000_000_123, Pid: 42, ServiceName: "zc", Kind: wirepb.EventKind_SPAWN,
		Extra: map[string]string{"version": "1.0.0"}, BrokerInstance: "shared", Reason: "ok"})
	if got, want := e.Line(time.UTC), "2023-11-14 22:13:20.123 SPAWN service=zc version=1.0.0 pid=42 instance=shared reason=ok"; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
