package supervisor

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

// TestLaunchModeEndToEnd: a "*" launch service spawns the backend named by a servicedef
// on the first Hello, reuses it for the next, lists it in STATUS, and stops it on shutdown.
func TestLaunchModeEndToEnd(t *testing.T) {
	e := newEnv(t)
	binDir := filepath.Join(e.dir, "bin", "1.0.0")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "echo")
	if err := os.WriteFile(bin, self, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := servicedef.Install(e.defDir, &wirepb.ServiceDefinition{
		ServiceName: "echo", BinaryPath: bin, PerVersionBinaryDir: filepath.Join(e.dir, "bin"),
		Isolation: wirepb.BrokerIsolation_SHARED_BROKER,
	}); err != nil {
		t.Fatal(err)
	}
	shared := e.sock("shared")
	e.writeConfig("\n[[service]]\nname = \"*\"\nmode = \"launch\"\nsocket = \"" + shared + "\"\nstart_timeout = \"10s\"\n")
	r := e.start()

	var n *wirepb.Negotiated
	testutil.WaitFor(t, "the first Hello to spawn and negotiate", func() bool {
		n, err = hello(shared, "echo", "1.0.0")
		return err == nil
	})
	if !strings.Contains(filepath.Base(n.BackendPipe), "-be-") {
		t.Fatalf("backend pipe %s is not a v1 backend socket name", n.BackendPipe)
	}
	c, err := net.Dial("unix", n.BackendPipe)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.UnixConn).CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "ping" {
		t.Fatalf("echo through the launched backend: %q", got)
	}
	n2, err := hello(shared, "echo", "1.0.0")
	if err != nil || n2.BackendPipe != n.BackendPipe {
		t.Fatalf("warm Hello should reuse the backend: %v %v", n2, err)
	}

	reply, err := client.Admin(context.Background(), shared, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Backends []struct {
			PID   int    `json:"pid"`
			Mode  string `json:"mode"`
			Pipe  string `json:"backend_pipe"`
			State string `json:"state"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil || len(st.Backends) != 1 || st.Backends[0].Pipe != n.BackendPipe || st.Backends[0].PID == 0 {
		t.Fatalf("status backends: %v %s", err, reply.Body)
	}
	pid := st.Backends[0].PID
	body, err := r.sup.metrics.render()
	for _, want := range []string{
		`running_process_broker_v1_spawn_attempts_total{outcome="success",service="echo",version="1.0.0"} 1`,
		`running_process_broker_v1_active_backends{service="echo"} 1`,
	} {
		if err != nil || !strings.Contains(body, want) {
			t.Errorf("metrics lack %s (%v)", want, err)
		}
	}

	r.shutdown(t)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("launched backend %d survived the broker's shutdown", pid)
	}
	testutil.WaitFor(t, "the backend socket to be removed", func() bool {
		_, err := os.Stat(n.BackendPipe)
		return err != nil
	})
}
