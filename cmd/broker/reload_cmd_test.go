package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
)

// TestReloadToUnbindableSocketExits1: `broker reload` of a config that moves a service to
// a socket the broker cannot bind exits 1 naming the service and the reason, and the
// broker keeps serving the old socket.
func TestReloadToUnbindableSocketExits1(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha", "beta")
	e.startBroker()
	testutil.WaitFor(t, "beta to negotiate", func() bool { return hello(e.sock("beta"), "beta") == nil })

	open := filepath.Join(e.dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	// beta moves into the open directory; alpha, first in the file, keeps its socket.
	moved := fmt.Sprintf("\n[[service]]\nname = \"beta\"\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n",
		e.backend(), filepath.Join(open, "beta.sock"))
	body, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cut := strings.Index(string(body), "\n[[service]]\nname = \"beta\"")
	if err := os.WriteFile(e.cfg, append(body[:cut:cut], moved...), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	code := runReload(context.Background(), []string{"-c", e.cfg}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `service "beta"`) || !strings.Contains(stderr.String(), "mode 0777") {
		t.Fatalf("reload: exit %d stdout %q stderr %q; want exit 1 naming beta and the directory mode", code, stdout.String(), stderr.String())
	}
	if err := hello(e.sock("beta"), "beta"); err != nil {
		t.Fatalf("beta's old socket must keep serving: %v", err)
	}
}
