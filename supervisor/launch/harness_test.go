package launch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	testSID         = "0123456789abcdef"
	testTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

// fakeClock is the budget clock: real time plus an offset the test advances.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// events collects lifecycle events.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) find(kind wirepb.EventKind, pid int) (Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Kind == kind && (pid == 0 || ev.PID == pid) {
			return ev, true
		}
	}
	return Event{}, false
}

// attempts returns the pids of started children of svc, in start order.
func (e *events) attempts(svc string) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var pids []int
	for _, ev := range e.all {
		if ev.Kind == wirepb.EventKind_SPAWN_ATTEMPT && ev.Service == svc && ev.PID != 0 {
			pids = append(pids, ev.PID)
		}
	}
	return pids
}

// firstAttempt waits for the first started child of svc.
func (h *harness) firstAttempt(svc string) int {
	h.t.Helper()
	var pid int
	testutil.WaitForErr(h.t, 10*time.Second, func() error {
		if p := h.ev.attempts(svc); len(p) > 0 {
			pid = p[0]
			return nil
		}
		return fmt.Errorf("no child of %s started", svc)
	})
	return pid
}

func (e *events) count(kind wirepb.EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// harness is a running Manager behind a real serve loop.
type harness struct {
	t           testing.TB
	m           *Manager
	reg         *registry.Registry
	ev          *events
	log         *testutil.SyncBuffer
	clock       *fakeClock
	dir         string // short work dir
	runDir      string // backend sockets
	behaviorDir string
	recordPath  string
	binDir      string
	sock        string // control socket

	mu       sync.Mutex
	defs     map[string]servicedef.Lookup
	settings map[string]Settings

	cancel  context.CancelFunc
	runDone chan error
	loopEnd context.CancelFunc
	loopWG  sync.WaitGroup
	stopped bool
}

// newHarness starts a Manager and a control loop serving every service in h.defs.
func newHarness(t testing.TB, tweak ...func(*Options)) *harness {
	t.Helper()
	return newHarnessIn(t, "/tmp", tweak...)
}

// newHarnessIn keeps sockets and records under base.
func newHarnessIn(t testing.TB, base string, tweak ...func(*Options)) *harness {
	t.Helper()
	dir := testutil.ShortDirIn(t, base)
	h := &harness{
		t: t, reg: registry.New(), ev: &events{}, log: &testutil.SyncBuffer{}, clock: &fakeClock{},
		dir: dir, runDir: filepath.Join(dir, "run"), behaviorDir: filepath.Join(dir, "beh"),
		recordPath: filepath.Join(dir, "records"), binDir: testBinDir,
		defs: map[string]servicedef.Lookup{}, settings: map[string]Settings{},
	}
	if err := os.Mkdir(h.behaviorDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// GORACE: a race-enabled child otherwise sleeps a second before exiting.
	env := append(os.Environ(), envRole+"=backend", envBehaviorDir+"="+h.behaviorDir, envRecord+"="+h.recordPath,
		"GORACE=atexit_sleep_ms=0")
	o := Options{
		Registry: h.reg, Hasher: &identity.Hasher{},
		Layout: names.Layout{Dir: h.runDir, SID: testSID},
		Log:    zerolog.New(h.log), Grace: 200 * time.Millisecond,
		Events: h.ev.add, Now: h.clock.Now, Environ: env,
	}
	for _, f := range tweak {
		f(&o)
	}
	h.m = New(o)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.runDone = cancel, make(chan error, 1)
	go func() { h.runDone <- h.m.Run(ctx) }()

	h.sock = filepath.Join(dir, "ctl.sock")
	ln, err := serve.Listen(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	loop := serve.New(serve.Options{
		Listener: ln,
		Settings: serve.Settings{Service: "*", HelloTimeout: 20 * time.Second, Router: h},
		Defs:     h, Shared: serve.NewShared(nil, nil), Log: zerolog.Nop(),
	})
	lctx, lcancel := context.WithCancel(context.Background())
	h.loopEnd = lcancel
	h.loopWG.Go(func() { loop.Run(lctx) })
	t.Cleanup(h.stop)
	return h
}

// stop ends the loop and the Manager, and checks that Run returned.
func (h *harness) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.loopEnd()
	h.loopWG.Wait()
	h.cancel()
	select {
	case err := <-h.runDone:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Fatal("Run did not return")
	}
}

// Lookup implements serve.Defs; the map is fixed before Hellos arrive.
func (h *harness) Lookup(s string) servicedef.Lookup {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.defs[s]
}

// Route implements serve.Router with per-service settings.
func (h *harness) Route(ctx context.Context, r *serve.Request) (serve.Route, error) {
	h.mu.Lock()
	s := h.settings[r.Hello.ServiceName]
	h.mu.Unlock()
	return h.m.Router(s).Route(ctx, r)
}

// service defines svc with the shared test binary (or def's fields when set).
func (h *harness) service(svc string, s Settings, def *wirepb.ServiceDefinition) {
	if def == nil {
		def = &wirepb.ServiceDefinition{BinaryPath: filepath.Join(h.binDir, "backend"), PerVersionBinaryDir: h.binDir}
	}
	def.ServiceName = svc
	h.mu.Lock()
	defer h.mu.Unlock()
	h.defs[svc] = servicedef.Lookup{Def: def, Found: true}
	h.settings[svc] = s
}

func (h *harness) behave(svc, behavior string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.behaviorDir, svc), []byte(behavior), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// hello sends one Hello to the control socket and returns the reply.
func hello(sock, svc, version string) (*wirepb.HelloReply, error) {
	f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoControl, 1,
		&wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: svc, WantedVersion: version})
	if err != nil {
		return nil, err
	}
	f.Traceparent = testTraceparent
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wire.WriteFrame(c, f); err != nil {
		return nil, err
	}
	rf, err := wire.ReadFrame(c, wire.MaxFrameBody)
	if err != nil {
		return nil, err
	}
	var hr wirepb.HelloReply
	if err := proto.Unmarshal(rf.Payload, &hr); err != nil {
		return nil, err
	}
	return &hr, nil
}

// negotiate expects a Negotiated reply and returns it.
func (h *harness) negotiate(svc, version string) *wirepb.Negotiated {
	h.t.Helper()
	hr, err := hello(h.sock, svc, version)
	if err != nil {
		h.t.Fatal(err)
	}
	n := hr.GetNegotiated()
	if n == nil {
		h.t.Fatalf("Hello %s %s: want Negotiated, got %v", svc, version, hr)
	}
	return n
}

// refused expects a Refused reply and returns it.
func (h *harness) refused(svc, version string) *wirepb.Refused {
	h.t.Helper()
	hr, err := hello(h.sock, svc, version)
	if err != nil {
		h.t.Fatal(err)
	}
	r := hr.GetRefused()
	if r == nil {
		h.t.Fatalf("Hello %s %s: want Refused, got %v", svc, version, hr)
	}
	return r
}

// waitRecords waits until n backends have written their record (they write it while
// already serving) and returns the records.
func (h *harness) waitRecords(n int) []record {
	h.t.Helper()
	var recs []record
	testutil.WaitForErr(h.t, 10*time.Second, func() error {
		if recs = h.records(); len(recs) < n {
			return fmt.Errorf("%d backend records, want %d", len(recs), n)
		}
		return nil
	})
	return recs
}

func (h *harness) records() []record {
	h.t.Helper()
	b, err := os.ReadFile(h.recordPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			h.t.Fatalf("record %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// pidOf returns the pid of the registered backend behind pipe.
func (h *harness) pidOf(pipe string) int {
	h.t.Helper()
	for _, b := range h.reg.List() {
		if b.Pipe == pipe {
			return b.PID
		}
	}
	h.t.Fatalf("no registry entry for %s", pipe)
	return 0
}

func (h *harness) waitEvent(kind wirepb.EventKind, pid int) Event {
	h.t.Helper()
	var ev Event
	testutil.WaitForErr(h.t, 10*time.Second, func() error {
		var ok bool
		if ev, ok = h.ev.find(kind, pid); !ok {
			return fmt.Errorf("no %s event for pid %d", kind, pid)
		}
		return nil
	})
	return ev
}

// procState is the state letter of /proc/<pid>/stat, or "" when the process is gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return "?"
	}
	return string(b[i+2])
}

// ignoresSIGTERM reports whether pid has SIGTERM ignored (SigIgn in /proc/<pid>/status).
func ignoresSIGTERM(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(15-1)) != 0
		}
	}
	return false
}

// waitGone asserts that pid disappears (reaped: no zombie) within limit.
func waitGone(t testing.TB, pid int, limit time.Duration) {
	t.Helper()
	testutil.WaitForErr(t, limit, func() error {
		if s := procState(pid); s != "" {
			return fmt.Errorf("pid %d still present in state %s", pid, s)
		}
		return nil
	})
}

// echoThrough checks that the backend at pipe serves data connections.
func echoThrough(t *testing.T, pipe string) {
	t.Helper()
	c, err := net.Dial("unix", pipe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The SDK tells probes from data by the first byte; a data client that speaks first
	// reaches the handler at once.
	msg := []byte("hello backend")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}
