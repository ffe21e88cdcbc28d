package supervisor

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

// A launched backend that exits before it is ready is BACKEND_HEALTH's last_error, with
// its exit status, and its version is reported down; STATUS counts the refused Hello
// against the "*" service that answered it.
func TestLaunchFailureIsLastError(t *testing.T) {
	e := newEnv(t)
	binDir := filepath.Join(e.dir, "bin", "1.0.0")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "false")
	testutil.CopyFile(t, "/bin/false", bin, 0o700) // exits 1 at once
	if _, err := servicedef.Install(e.defDir, &wirepb.ServiceDefinition{
		ServiceName: "dud", BinaryPath: bin, PerVersionBinaryDir: filepath.Join(e.dir, "bin"),
		Isolation: wirepb.BrokerIsolation_SHARED_BROKER,
	}); err != nil {
		t.Fatal(err)
	}
	shared := e.sock("shared")
	e.writeConfig("\n[[service]]\nname = \"*\"\nmode = \"launch\"\nsocket = \"" + shared + "\"\nstart_timeout = \"10s\"\n")
	e.start()
	testutil.WaitFor(t, "the Hello to be refused", func() bool {
		_, err := hello(shared, "dud", "1.0.0")
		return refusedCode(err) == wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED
	})

	var bh admin.BackendHealthReply
	testutil.WaitFor(t, "the exit to be recorded", func() bool {
		reply, err := client.Admin(context.Background(), shared, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_BACKEND_HEALTH, ServiceName: "dud"})
		return err == nil && json.Unmarshal([]byte(reply.Body), &bh) == nil && len(bh.Backends) == 1
	})
	if b := bh.Backends[0]; b.State != "down" || b.ServiceVersion != "1.0.0" || !strings.Contains(b.LastError, "exit status 1") {
		t.Fatalf("backend health: %+v", b)
	}

	// The Hello is counted once answered, which the client may see first.
	var svc admin.ServiceStatus
	testutil.WaitFor(t, "the refusal to be counted", func() bool {
		reply, err := client.Admin(context.Background(), shared, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
		var st admin.StatusReply
		if err != nil || json.Unmarshal([]byte(reply.Body), &st) != nil || len(st.Services) != 1 {
			t.Fatalf("status: %v", err)
		}
		svc = st.Services[0]
		return svc.Hellos > 0
	})
	if svc.Name != "*" || svc.State != admin.StateServing || svc.Refusals != svc.Hellos || svc.Instance != "shared" {
		t.Fatalf("service: %+v", svc)
	}
}
