package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// unbindable returns a socket path in dir that serve.Listen refuses, and the words the
// refusal must contain.
var unbindable = []struct {
	name string
	make func(t *testing.T, dir string) (path, reason string)
}{
	{"directory other users can reach", func(t *testing.T, dir string) (string, string) {
		open := filepath.Join(dir, "open")
		if err := os.Mkdir(open, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(open, 0o777); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(open, "moved.sock"), "mode 0777"
	}},
	{"a regular file in the way", func(t *testing.T, dir string) (string, string) {
		p := filepath.Join(dir, "file.sock")
		if err := os.WriteFile(p, []byte("not a socket"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p, "is not a socket"
	}},
	{"parent is a file", func(t *testing.T, dir string) (string, string) {
		p := filepath.Join(dir, "plain")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(p, "moved.sock"), "not a directory"
	}},
}

// TestReloadToUnbindableSocketKeepsOldOne: moving a service to a socket that cannot be
// bound fails the reload as a whole: the old socket keeps serving, the config in force is
// the old one, and the failure is reported with the service and the reason.
func TestReloadToUnbindableSocketKeepsOldOne(t *testing.T) {
	for _, tc := range unbindable {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			be, _ := startBackend(t, e.dir)
			e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
			r := e.start()
			testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))
			ino := inode(t, e.sock("svc"))

			bad, reason := tc.make(t, e.dir)
			e.writeConfig(registeredService("svc", "1.0.0", be, bad))
			res := r.sup.Reload(context.Background())
			if res.Err == nil || !strings.Contains(res.Err.Error(), `"svc"`) || !strings.Contains(res.Err.Error(), reason) {
				t.Fatalf("reload error should name the service and %q: %v", reason, res.Err)
			}
			if _, err := hello(e.sock("svc"), "svc", "1.0.0"); err != nil {
				t.Fatalf("the old socket must keep serving: %v", err)
			}
			if inode(t, e.sock("svc")) != ino {
				t.Fatal("the old socket was rebound")
			}
			checkReloadFailed(t, r, "svc", e.sock("svc"), e.sock("svc"))
		})
	}
}

// checkReloadFailed checks the failure is counted and reported naming service, and that
// the running config is the old one (CONFIG shows oldSocket), asking over socket.
func checkReloadFailed(t *testing.T, r *running, service, socket, oldSocket string) {
	t.Helper()
	body, err := r.sup.metrics.render()
	if err != nil || !strings.Contains(body, "running_process_broker_config_last_reload_successful 0") ||
		!strings.Contains(body, `running_process_broker_config_reloads_total{result="failure"} 1`) {
		t.Errorf("metrics should record the failed reload: %v\n%s", err, body)
	}
	reply, err := adminReq(socket, wirepb.AdminVerb_STATUS)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Reload struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"config_reload"`
	}
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil || st.Reload.OK || !strings.Contains(st.Reload.Error, `"`+service+`"`) {
		t.Errorf("STATUS should report the failed reload: %v %s", err, reply.Body)
	}
	reply, err = adminReq(socket, wirepb.AdminVerb_CONFIG)
	if err != nil || !strings.Contains(reply.Body, `"value": "`+oldSocket+`"`) {
		t.Errorf("CONFIG should still show the old socket %s: %v\n%s", oldSocket, err, reply.GetBody())
	}
}

// TestReloadBindsAllOrNothing: of two new sockets, the second cannot be bound; the first,
// bound by the reload, is closed again and no service of the reload starts.
func TestReloadBindsAllOrNothing(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")))
	r := e.start()
	testutil.WaitFor(t, "svc to negotiate", negotiates(e.sock("svc"), "svc", "1.0.0"))

	bad, _ := unbindable[0].make(t, e.dir)
	e.writeConfig(registeredService("svc", "1.0.0", be, e.sock("svc")) +
		registeredService("good", "1.0.0", be, e.sock("good")) +
		registeredService("bad", "1.0.0", be, bad))
	res := r.sup.Reload(context.Background())
	if res.Err == nil || !strings.Contains(res.Err.Error(), `"bad"`) {
		t.Fatalf("reload should fail naming bad: %v", res.Err)
	}
	if _, err := os.Lstat(e.sock("good")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket the failed reload bound must be gone: %v", err)
	}
	if _, err := hello(e.sock("svc"), "svc", "1.0.0"); err != nil {
		t.Fatalf("svc must keep serving: %v", err)
	}
	checkReloadFailed(t, r, "bad", e.sock("svc"), e.sock("svc"))

	// Once the path is fixed, the same reload applies whole.
	if err := os.Chmod(filepath.Dir(bad), 0o700); err != nil {
		t.Fatal(err)
	}
	if res := r.sup.Reload(context.Background()); res.Err != nil {
		t.Fatal(res.Err)
	}
	for name, sock := range map[string]string{"good": e.sock("good"), "bad": bad} {
		testutil.WaitFor(t, name+" to negotiate after the fixed reload", negotiates(sock, name, "1.0.0"))
	}
}

// TestReloadHandsSocketToRenamedService: a socket that a removed service holds is taken
// over by the service the same reload adds on it (a rename), which cannot bind it first.
func TestReloadHandsSocketToRenamedService(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("old", "1.0.0", be, e.sock("shared")))
	r := e.start()
	testutil.WaitFor(t, "old to negotiate", negotiates(e.sock("shared"), "old", "1.0.0"))

	e.writeConfig(registeredService("new", "1.0.0", be, e.sock("shared")))
	if res := r.sup.Reload(context.Background()); res.Err != nil {
		t.Fatal(res.Err)
	}
	testutil.WaitFor(t, "new to negotiate on the same socket", negotiates(e.sock("shared"), "new", "1.0.0"))
}
