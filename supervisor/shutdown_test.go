package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

// installLaunched puts a copy of the test binary under e.dir/bin/1.0.0 and a servicedef
// for service naming it; the copy runs as a launched backend (see TestMain).
func installLaunched(t *testing.T, e *env, service string) {
	t.Helper()
	binDir := filepath.Join(e.dir, "bin", "1.0.0")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, service)
	testutil.CopyFile(t, os.Args[0], bin, 0o700)
	if _, err := servicedef.Install(e.defDir, &wirepb.ServiceDefinition{
		ServiceName: service, BinaryPath: bin, PerVersionBinaryDir: filepath.Join(e.dir, "bin"),
		Isolation: wirepb.BrokerIsolation_SHARED_BROKER,
	}); err != nil {
		t.Fatal(err)
	}
}

func launchService(name, socket string) string {
	return fmt.Sprintf("\n[[service]]\nname = %q\nmode = \"launch\"\nsocket = %q\nstart_timeout = \"10s\"\n", name, socket)
}

// answers reports whether a control socket answers a Hello at all (a refusal counts).
func answers(socket string) func() bool {
	return func() bool {
		_, err := hello(socket, "no-such-service", "1.0.0")
		var r *client.RefusedError
		return err == nil || errors.As(err, &r)
	}
}

// spawnedPID waits for the lifecycle event of a spawn of service (admin DUMP over
// socket) and returns the child's pid.
func spawnedPID(t *testing.T, socket, service string) int {
	t.Helper()
	var pid int
	testutil.WaitForErr(t, 10*time.Second, func() error {
		reply, err := adminReq(socket, wirepb.AdminVerb_DUMP)
		if err != nil {
			return err
		}
		var d struct {
			Events []struct {
				Kind    string `json:"kind"`
				PID     int    `json:"pid"`
				Service string `json:"service_name"`
			} `json:"recent_lifecycle_events"`
		}
		if err := json.Unmarshal([]byte(reply.Body), &d); err != nil {
			return err
		}
		for _, ev := range d.Events {
			if ev.Kind == "SPAWN_ATTEMPT" && ev.Service == service && ev.PID > 0 {
				pid = ev.PID
				return nil
			}
		}
		return fmt.Errorf("no spawn of %s in DUMP yet", service)
	})
	return pid
}

func processGone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// TestShutdownAnswersSpawnInFlight: a client waits in its Hello for a backend that never
// becomes ready (and ignores SIGTERM) when the broker is told to stop. The drain does not
// wait for the spawn: the client gets SHUTTING_DOWN, Run returns within a second though
// shutdown_grace is 5 s and start_timeout 10 s, and the child is gone.
func TestShutdownAnswersSpawnInFlight(t *testing.T) {
	e := newEnv(t)
	installLaunched(t, e, hangService)
	shared := e.sock("shared")
	e.writeConfig(launchService("*", shared))
	r := e.start()
	testutil.WaitFor(t, "the launch socket to answer", answers(shared))

	type reply struct {
		err error
		at  time.Time
	}
	got := make(chan reply, 1)
	go func() {
		_, err := hello(shared, hangService, "1.0.0")
		got <- reply{err, time.Now()}
	}()
	pid := spawnedPID(t, shared, hangService)

	stopped := time.Now()
	r.stop()
	select {
	case err := <-r.done:
		close(r.done)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3s of the stop")
	}
	if took := time.Since(stopped); took > time.Second {
		t.Errorf("Run returned %v after the stop, want < 1s", took)
	}
	rep := <-got
	if refusedCode(rep.err) != wirepb.ErrorCode_ERROR_SHUTTING_DOWN {
		t.Errorf("the Hello waiting on the spawn got %v, want SHUTTING_DOWN", rep.err)
	}
	if took := rep.at.Sub(stopped); took > time.Second {
		t.Errorf("the waiting Hello was answered %v after the stop, want < 1s", took)
	}
	if !processGone(pid) {
		t.Errorf("the starting child %d survived the broker's shutdown", pid)
	}
	t.Logf("Hello answered %v and Run returned %v after the stop", rep.at.Sub(stopped), time.Since(stopped))
}
