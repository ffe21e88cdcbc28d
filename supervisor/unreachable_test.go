package supervisor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// listed reports whether admin STATUS and DUMP, asked over socket, list the backend pid.
func listed(t *testing.T, socket string, pid int) (status, dump bool) {
	t.Helper()
	for _, verb := range []wirepb.AdminVerb{wirepb.AdminVerb_STATUS, wirepb.AdminVerb_DUMP} {
		reply, err := adminReq(socket, verb)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Backends []struct {
				PID     int    `json:"pid"`
				Service string `json:"service_name"`
			} `json:"backends"`
			Table []struct {
				PID     int    `json:"pid"`
				Service string `json:"service_name"`
			} `json:"backend_table"`
		}
		if err := json.Unmarshal([]byte(reply.Body), &body); err != nil {
			t.Fatal(err)
		}
		for _, b := range append(body.Backends, body.Table...) {
			if b.PID == pid {
				status = status || verb == wirepb.AdminVerb_STATUS
				dump = dump || verb == wirepb.AdminVerb_DUMP
			}
		}
	}
	return status, dump
}

// launchedPID is the pid of the one backend STATUS lists for service.
func launchedPID(t *testing.T, socket, service string) int {
	t.Helper()
	reply, err := adminReq(socket, wirepb.AdminVerb_STATUS)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Backends []struct {
			PID     int    `json:"pid"`
			Service string `json:"service_name"`
			Mode    string `json:"mode"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, b := range st.Backends {
		if b.Service == service && b.Mode == "launch" {
			pids = append(pids, b.PID)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("want one launched %s backend in STATUS, got %v:\n%s", service, pids, reply.Body)
	}
	return pids[0]
}

// TestReloadStopsBackendsNoServiceReaches: a reload that takes a launch service away
// (removed, or turned into a registered service) stops the backends it launched at once,
// not after idle_timeout, and they leave STATUS and DUMP; a "*" launch service that stays
// still reaches them, so they keep running.
func TestReloadStopsBackendsNoServiceReaches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(e *env, keep, be string) string // the services of the reloaded config
		stops bool
	}{
		{"service removed", func(e *env, keep, be string) string { return keep }, true},
		{"service turned registered", func(e *env, keep, be string) string {
			return keep + registeredService("echo", "1.0.0", be, e.sock("echo"))
		}, true},
		{"removed but * stays", func(e *env, keep, be string) string {
			return keep + launchService("*", e.sock("any"))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			be, _ := startBackend(t, e.dir)
			installLaunched(t, e, "echo")
			keep := registeredService("keep", "1.0.0", be, e.sock("keep"))
			before := keep + launchService("echo", e.sock("echo"))
			if !tc.stops {
				before += launchService("*", e.sock("any"))
			}
			e.writeConfig(before)
			r := e.start()
			testutil.WaitFor(t, "echo to spawn and negotiate", negotiates(e.sock("echo"), "echo", "1.0.0"))
			pid := launchedPID(t, e.sock("keep"), "echo")
			if status, dump := listed(t, e.sock("keep"), pid); !status || !dump {
				t.Fatalf("backend %d listed in STATUS %t, DUMP %t; want both", pid, status, dump)
			}

			e.writeConfig(tc.after(e, keep, be))
			reloaded := time.Now()
			if res := r.sup.Reload(context.Background()); res.Err != nil {
				t.Fatal(res.Err)
			}
			status, dump := listed(t, e.sock("keep"), pid)
			if !tc.stops {
				if !status || !dump || processGone(pid) {
					t.Fatalf("backend %d, which * still reaches, was stopped: in STATUS %t, DUMP %t", pid, status, dump)
				}
				return
			}
			if status || dump {
				t.Errorf("stopped backend %d is still listed: in STATUS %t, DUMP %t", pid, status, dump)
			}
			testutil.WaitFor(t, "the unreachable backend to exit", func() bool { return processGone(pid) })
			t.Logf("backend %d gone %v after the reload began", pid, time.Since(reloaded))
		})
	}
}
