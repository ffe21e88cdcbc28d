package launch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
)

// The test binary doubles as the backend (and as a mini broker for the Pdeathsig test),
// selected by envRole; the tests copy it into a per_version_binary_dir.
const (
	envRole        = "LAUNCHER_TEST_ROLE"
	envBehaviorDir = "LAUNCHER_TEST_BEHAVIOR_DIR" // file <dir>/<service> selects a behavior
	envRecord      = "LAUNCHER_TEST_RECORD"       // each serving backend appends a JSON line
	envBrokerDir   = "LAUNCHER_TEST_BROKER_DIR"   // mini broker: work dir holding bin/ and run/
)

// testBinDir holds a copy of the test binary, made once in TestMain.
var testBinDir string

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "backend":
		os.Exit(runBackend())
	case "broker":
		os.Exit(runMiniBroker())
	case "upgrader":
		os.Exit(osthread.Main(context.Background(), runUpgrader))
	}
	dir, err := os.MkdirTemp("", "launcher-bin")
	if err == nil {
		err = testutil.Copy(os.Args[0], filepath.Join(dir, "backend"), 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "launcher tests: copy test binary:", err)
		os.Exit(1)
	}
	testBinDir = dir
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// record is what a serving test backend reports about itself.
type record struct {
	PID      int               `json:"pid"`
	EntryNS  int64             `json:"entry_ns"`  // TestMain entered
	ListenNS int64             `json:"listen_ns"` // listener adopted, identity computed, serving
	Args     []string          `json:"args"`
	Stdin    string            `json:"stdin"`
	Env      map[string]string `json:"env"`
}

// runBackend is the launched child. Behaviors: serve (default), exit3, hang (never
// accepts, ignores SIGTERM), "usr1exit N" (serve; exit with status N on SIGUSR1),
// stubborn (serve, ignoring SIGTERM).
func runBackend() int {
	entry := time.Now()
	behavior := "serve"
	if dir := os.Getenv(envBehaviorDir); dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, os.Getenv(wire.EnvServiceName))); err == nil {
			behavior = strings.TrimSpace(string(b))
		}
	}
	switch behavior {
	case "exit3":
		fmt.Fprintln(os.Stderr, "test backend: exiting with status 3")
		return 3
	case "hang":
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Hour)
		return 0
	}
	if v, ok := strings.CutPrefix(behavior, "usr1exit "); ok {
		code, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test backend: bad behavior:", behavior)
			return 1
		}
		// Installed before the listener is adopted, so before the first probe is answered.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			<-usr1
			os.Exit(code)
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if behavior == "stubborn" {
		stop()
		ctx = context.Background() // stop cancelled the signal context
		signal.Ignore(syscall.SIGTERM)
	}
	srv, err := backend.FromEnv()
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "test backend:", err)
		return 1
	}
	// Serving starts before the record is written, so the record's listen time is when
	// the backend could first answer, and writing it is off the probe's path.
	listen := time.Now()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, echo) }()
	if err := writeRecord(entry, listen); err != nil {
		fmt.Fprintln(os.Stderr, "test backend: record:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "test backend: serving pid=%d\n", os.Getpid())
	if err := <-served; err != nil {
		fmt.Fprintln(os.Stderr, "test backend:", err)
		return 1
	}
	return 0
}

func writeRecord(entry, listen time.Time) error {
	path := os.Getenv(envRecord)
	if path == "" {
		return nil
	}
	r := record{PID: os.Getpid(), EntryNS: entry.UnixNano(), ListenNS: listen.UnixNano(), Args: os.Args, Env: map[string]string{}}
	r.Stdin, _ = os.Readlink("/proc/self/fd/0")
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "RUNNING_PROCESS_") {
			r.Env[k] = v
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// One write below PIPE_BUF-ish size with O_APPEND: concurrent backends do not interleave.
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func echo(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, _ = io.Copy(conn, conn)
}
