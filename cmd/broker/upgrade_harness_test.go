package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/wire/wirepb"
)

// runLaunchedEcho is the test binary as a backend the broker launches (its launch
// environment names a service): it echoes.
func runLaunchedEcho() int {
	srv, err := backend.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "launched echo:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Serve(ctx, func(ctx context.Context, c net.Conn) { io.Copy(c, c) }); err != nil {
		return 1
	}
	return 0
}

// upgradeBroker is a running broker with a registered service (alpha, its backend run by
// the test) and a launch service ("*", serving echo-launch from a copy of the test
// binary).
type upgradeBroker struct {
	t      testing.TB
	dir    string
	cfg    string
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	events string
}

func (u *upgradeBroker) sock(name string) string { return filepath.Join(u.dir, name+".sock") }

func startUpgradeBroker(t testing.TB) *upgradeBroker {
	t.Helper()
	dir := testutil.ShortDir(t)
	u := &upgradeBroker{t: t, dir: dir, cfg: filepath.Join(dir, "broker.toml"), events: filepath.Join(dir, "events.log")}
	be := handofftest.Start(t, handofftest.Echo, dir, -1)
	defs, bin := filepath.Join(dir, "defs"), filepath.Join(dir, "bin")
	exe := filepath.Join(bin, "1.0.0", "echo")
	for _, d := range []string{defs, filepath.Dir(exe)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CopyFile(t, os.Args[0], exe, 0o755)
	def, err := servicedef.Encode(&wirepb.ServiceDefinition{ServiceName: "echo-launch", BinaryPath: exe,
		PerVersionBinaryDir: bin, Isolation: wirepb.BrokerIsolation_SHARED_BROKER})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(defs, "echo-launch.servicedef"), def, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("[broker]\nservicedef_dir = %q\nruntime_dir = %q\nhello_rate_limit = 0\nhello_timeout = \"5s\"\n"+
		"event_log = %q\n\n[[service]]\nname = \"alpha\"\nmode = \"registered\"\nversion = \"1.0.0\"\n"+
		"backend_endpoint = %q\nsocket = %q\n\n[[service]]\nname = \"*\"\nmode = \"launch\"\nsocket = %q\nidle_timeout = \"0\"\n",
		defs, dir, u.events, be.Endpoint, u.sock("alpha"), u.sock("star"))
	if err := os.WriteFile(u.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	u.out = &testutil.SyncBuffer{}
	u.cmd = exec.Command(os.Args[0], "-c", u.cfg)
	u.cmd.Env = append(os.Environ(), envRunBroker+"=1", "RP_BROKER_LOG_FORMAT=json")
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.cmd.Process.Kill()
		u.cmd.Wait()
	})
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(u.sock("alpha"), "alpha") == nil })
	testutil.WaitFor(t, "echo-launch to negotiate", func() bool { return hello(u.sock("star"), "echo-launch") == nil })
	return u
}

// status is the broker's admin STATUS --json.
func (u *upgradeBroker) status() admin.StatusReply {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := client.Admin(ctx, u.sock("alpha"), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
	if err != nil {
		u.t.Fatalf("status: %v\n%s", err, u.out.String())
	}
	var st admin.StatusReply
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil {
		u.t.Fatal(err)
	}
	return st
}

// launchedPID is the pid of the echo-launch backend in st (0: none).
func launchedPID(st admin.StatusReply) int {
	for _, b := range st.Backends {
		if b.ServiceName == "echo-launch" && b.State == "running" {
			return b.PID
		}
	}
	return 0
}

func (u *upgradeBroker) upgrade(args ...string) (string, string, int) {
	var o, e bytes.Buffer
	code := runUpgrade(context.Background(), append([]string{"-c", u.cfg}, args...), &o, &e)
	return o.String(), e.String(), code
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	ino, err := upgrade.Inode(path)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// hammer runs n clients looping Hellos until stop, alternating the two services, and
// counts what they got.
type hammer struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startHammer(u *upgradeBroker, n int) *hammer {
	h := &hammer{stop: make(chan struct{})}
	for i := range n {
		sock, svc := u.sock("alpha"), "alpha"
		if i%2 == 1 {
			sock, svc = u.sock("star"), "echo-launch"
		}
		h.wg.Go(func() {
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				if err := hello(sock, svc); err != nil {
					h.failed.Add(1)
					h.mu.Lock()
					h.errs = append(h.errs, svc+": "+err.Error())
					h.mu.Unlock()
					continue
				}
				h.ok.Add(1)
			}
		})
	}
	return h
}

func (h *hammer) end() { close(h.stop); h.wg.Wait() }
