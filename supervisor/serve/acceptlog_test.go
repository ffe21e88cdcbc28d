package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	emfileChildEnv = "RPB_SERVE_EMFILE_CHILD" // the socket path the child serves
	// emfileWindow is how long the child keeps its descriptors exhausted while a
	// connection waits to be accepted: the window over which log lines are counted.
	emfileWindow = 1500 * time.Millisecond
)

// TestAcceptErrorLogRateLimited runs a serve loop in a child process (this test binary,
// re-executed) whose RLIMIT_NOFILE is exhausted while a client waits in the backlog:
// accept fails with EMFILE about every 10 ms, and the log must carry about one line per
// second with a count, not one per failure. Once descriptors are free the waiting client
// is answered FD_PRESSURE.
func TestAcceptErrorLogRateLimited(t *testing.T) {
	if path := os.Getenv(emfileChildEnv); path != "" {
		emfileChild(t, path)
		return
	}
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptErrorLogRateLimited$", "-test.count=1")
	cmd.Env = append(os.Environ(), emfileChildEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	cmd.Stdout = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, logs.String())
		}
	}()
	status := bufio.NewScanner(stderr)
	if !status.Scan() || status.Text() != "exhausted" {
		t.Fatalf("child did not exhaust its descriptors: %q %v", status.Text(), status.Err())
	}
	go io.Copy(io.Discard, stderr) // the rest of the child's stderr, until it exits

	c, err := net.Dial("unix", path) // waits in the backlog: the child cannot accept
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frameBytes(t, helloFrame(t, goodHello()))); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "dialled\n"); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(emfileWindow + 10*time.Second))
	f, err := wire.ReadFrame(c, wire.MaxFrameBody)
	if err != nil {
		t.Fatalf("no reply once descriptors were free: %v", err)
	}
	var hr wirepb.HelloReply
	if err := protoUnmarshal(f.Payload, &hr); err != nil {
		t.Fatal(err)
	}
	if r := hr.GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_FD_PRESSURE {
		t.Fatalf("want FD_PRESSURE after the exhaustion, got %v", &hr)
	}
	stdin.Close() // the child stops its loop and exits
	testutil.WaitFor(t, "the child's recovery line", func() bool { return strings.Contains(logs.String(), "accept recovered") })

	lines, maxRepeated, failed := 0, 0, 0
	for _, l := range strings.Split(logs.String(), "\n") {
		var e struct {
			Message  string `json:"message"`
			Repeated int    `json:"repeated"`
			Failed   int    `json:"failed_accepts"`
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			continue
		}
		switch e.Message {
		case "accept: out of file descriptors; demoted":
			lines++
			maxRepeated = max(maxRepeated, e.Repeated)
		case "accept recovered":
			failed = e.Failed
		}
	}
	t.Logf("%d accept failures in %v logged in %d lines (largest count %d)", failed, emfileWindow, lines, maxRepeated)
	if limit := int(emfileWindow/time.Second) + 2; lines < 1 || lines > limit {
		t.Fatalf("%d accept-error lines over %v, want 1..%d:\n%s", lines, emfileWindow, limit, logs.String())
	}
	if failed < 20 || lines > 1 && maxRepeated < 10 {
		t.Fatalf("failures %d, largest repeat count %d: the flood was not exercised or not counted", failed, maxRepeated)
	}
}

// emfileChild serves path with every descriptor taken until the parent has a connection
// waiting, keeps them taken for emfileWindow, frees them, and serves until stdin closes.
func emfileChild(t *testing.T, path string) {
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	shared := NewShared(nil, nil)
	loop := New(Options{Listener: ln, Settings: Settings{Service: "zc", HelloTimeout: 5 * time.Second},
		Defs: mapDefs{}, Shared: shared, Log: zerolog.New(os.Stdout)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	fillers, err := exhaustFDs()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(os.Stderr, "exhausted")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	time.Sleep(emfileWindow) // the measurement window, not synchronisation
	for _, fd := range fillers {
		unix.Close(fd)
	}
	io.Copy(io.Discard, in) // until the parent closes stdin
}

// exhaustFDs lowers RLIMIT_NOFILE near the descriptors in use and takes the rest.
func exhaustFDs() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, err
	}
	rl.Cur = uint64(len(entries) + 16)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, err
	}
	var fds []int
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, syscall.EMFILE) {
			return fds, nil
		}
		if err != nil {
			return nil, err
		}
		fds = append(fds, fd)
	}
}
