package launch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

const envBrokerBin = "LAUNCHER_TEST_BROKER_BIN" // mini broker: per_version_binary_dir

// runMiniBroker starts a Manager, spawns one backend, makes the Go runtime retire some
// OS threads, checks the child survived, prints its pid and waits to be killed.
func runMiniBroker() int {
	dir, binDir := os.Getenv(envBrokerDir), os.Getenv(envBrokerBin)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LAUNCHER_TEST_") {
			env = append(env, kv)
		}
	}
	m := New(Options{
		Layout:  names.Layout{Dir: filepath.Join(dir, "run"), SID: testSID},
		Log:     zerolog.New(os.Stderr),
		Environ: append(env, envRole+"=backend", "GORACE=atexit_sleep_ms=0"),
	})
	go m.Run(context.Background()) // runs until the process is killed
	req := &serve.Request{
		Hello:    &wirepb.Hello{ServiceName: "echo", WantedVersion: "1.0.0"},
		Def:      &wirepb.ServiceDefinition{ServiceName: "echo", BinaryPath: filepath.Join(binDir, "backend"), PerVersionBinaryDir: binDir},
		Instance: "private:echo",
	}
	if _, err := m.Router(Settings{}).Route(context.Background(), req); err != nil {
		fmt.Fprintln(os.Stderr, "mini broker: route:", err)
		return 1
	}
	// Each goroutine returns locked, so its thread exits. A smoke check only: which
	// thread the runtime retires is not ours to choose.
	for range 64 {
		var wg sync.WaitGroup
		wg.Go(func() { runtime.LockOSThread() })
		wg.Wait()
	}
	infos := m.Backends()
	if len(infos) != 1 || infos[0].State != "running" || procState(infos[0].PID) == "" {
		fmt.Fprintf(os.Stderr, "mini broker: backend lost after thread churn: %+v\n", infos)
		return 1
	}
	fmt.Printf("pid %d\n", infos[0].PID)
	time.Sleep(time.Hour) // until SIGKILL
	return 0
}

func TestBrokerKilledTakesChildrenAlong(t *testing.T) {
	dir := testutil.ShortDir(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", envRole+"=broker", envBrokerDir+"="+dir, envBrokerBin+"="+testBinDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "pid %d", &pid); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("mini broker printed %q (%v)\n%s", line, err, stderr.String())
	}
	if s := procState(pid); s == "" || s == "Z" {
		t.Fatalf("backend %d not running before the kill (state %q)", pid, s)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// The orphan is reparented; whoever reaps it, it must be dead (gone or a zombie).
	testutil.WaitForErr(t, time.Second, func() error {
		if s := procState(pid); s != "" && s != "Z" {
			return fmt.Errorf("backend %d still alive (state %s) after the broker was killed", pid, s)
		}
		return nil
	})
}
