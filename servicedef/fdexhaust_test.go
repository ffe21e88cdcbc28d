package servicedef

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
)

// The fd-exhaustion tests lower RLIMIT_NOFILE and fill the descriptor table, which is
// process-wide: they run the Loader in a re-executed test binary (fdExhaustMain) and drive
// it over its stdin and stdout.
const (
	envFDMode = "SERVICEDEF_TEST_FD_MODE" // event, backstop or startup
	envFDDir  = "SERVICEDEF_TEST_FD_DIR"
)

// fdMode says how the Loader meets the shortage in each mode, and what its log shows (each
// string at least times times) once it has.
func fdMode(mode string) (opts []Option, waitFor []string, times int, ok bool) {
	switch mode {
	case "event": // the watch exists; the event for a new file cannot be read
		return nil, []string{"b.servicedef: open"}, 1, true
	case "backstop": // periodic rescans also fail to list the directory
		return []Option{WithRescanInterval(10 * time.Millisecond)}, []string{"b.servicedef: open", "list: open"}, 1, true
	case "startup":
		// The Loader starts during the shortage: no watch, no snapshot yet. A shortage of
		// several attempts shows whether the retry backs off past the one-second promise.
		return nil, []string{"list: open"}, 6, true
	}
	return nil, nil, 0, false
}

func TestLoaderSurvivesFDExhaustion(t *testing.T) {
	for _, mode := range []string{"event", "backstop", "startup"} {
		t.Run(mode, func(t *testing.T) {
			dir := privateDir(t)
			renameOver(t, dir, "a", encode(t, defWith("a", "/bin/a")))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envFDMode+"="+mode, envFDDir+"="+dir)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			stderr := &testutil.SyncBuffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := bufio.NewScanner(stdout)
			expect := func(prefix string) string {
				t.Helper()
				if !lines.Scan() || !strings.HasPrefix(lines.Text(), prefix) {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					t.Fatalf("helper: want %q, got %q (%v)\nstderr:\n%s", prefix, lines.Text(), lines.Err(), stderr)
				}
				return lines.Text()
			}
			expect("exhausted")
			// Written from this process, which has descriptors, while the helper has none.
			renameOver(t, dir, "b", encode(t, defWith("b", "/bin/b")))
			if _, err := io.WriteString(stdin, "written\n"); err != nil {
				t.Fatal(err)
			}
			result := expect("ok")
			_, _ = io.Copy(io.Discard, stdout)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("helper: %v\nstderr:\n%s", err, stderr)
			}
			t.Logf("%s: %s", mode, result)
		})
	}
}

// fdExhaustMain runs the Loader through a descriptor shortage: the last good definition of
// a must stay in effect throughout, and b, written by the parent during the shortage, must
// be live within a second of the descriptors coming back.
func fdExhaustMain(mode, dir string) int {
	if err := fdExhaust(mode, dir); err != nil {
		fmt.Println("fail:", err)
		fmt.Fprintln(os.Stderr, "fail:", err)
		return 1
	}
	return 0
}

func fdExhaust(mode, dir string) error {
	opts, waitFor, times, ok := fdMode(mode)
	if !ok {
		return fmt.Errorf("unknown mode %q", mode)
	}
	logs := &testutil.SyncBuffer{}
	l := NewLoader(dir, zerolog.New(logs).Level(zerolog.DebugLevel), opts...)
	changes, unsubscribe := l.Subscribe()
	defer unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	defer func() { cancel(); <-done }()
	start := func() error {
		go func() { done <- l.Run(ctx) }()
		return waitUntil(5*time.Second, "first snapshot", func() bool {
			select {
			case <-l.Ready():
				return true
			default:
				return false
			}
		})
	}
	aLive := func() bool { return l.Lookup("a").Def.GetBinaryPath() == "/bin/a" }
	if mode != "startup" {
		if err := start(); err != nil {
			return err
		}
		if err := waitUntil(5*time.Second, "a loaded", aLive); err != nil {
			return err
		}
	}

	release, err := fillFDTable()
	if err != nil {
		return err
	}
	defer release()
	if mode == "startup" {
		if err := start(); err != nil {
			return err
		}
	}
	fmt.Println("exhausted")
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "written\n" {
		return fmt.Errorf("parent said %q: %v", line, err)
	}
	if err := waitUntil(10*time.Second, fmt.Sprintf("log lines %q", waitFor), func() bool {
		for _, s := range waitFor {
			if strings.Count(logs.String(), s) < times {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("%w\nlog:\n%s", err, logs)
	}
	if mode != "startup" && !aLive() {
		return fmt.Errorf("a dropped during the shortage: %+v\nlog:\n%s", l.Lookup("a"), logs)
	}
	if l.Lookup("b").Def != nil {
		return errors.New("b loaded during the shortage: the descriptor table was not full")
	}

	release()
	returned := time.Now()
	if err := waitUntil(time.Second, "a and b live after descriptors returned", func() bool {
		return aLive() && l.Lookup("b").Def.GetBinaryPath() == "/bin/b"
	}); err != nil {
		return fmt.Errorf("%w: a=%+v b=%+v\nlog:\n%s", err, l.Lookup("a"), l.Lookup("b"), logs)
	}
	took := time.Since(returned)
	unsubscribe()
	for c := range changes {
		if c.Service == "a" && c.Def == nil && mode != "startup" {
			return fmt.Errorf("a lost its definition: %+v", c)
		}
	}
	fmt.Printf("ok live %v after descriptors returned\n", took.Round(time.Millisecond))
	return nil
}

// fillFDTable lowers the soft RLIMIT_NOFILE and opens /dev/null until EMFILE. release
// closes them and restores the limit; it may be called more than once.
func fillFDTable() (release func(), err error) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		return nil, fmt.Errorf("getrlimit: %w", err)
	}
	low := orig
	low.Cur = min(orig.Cur, 256)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		return nil, fmt.Errorf("setrlimit: %w", err)
	}
	var fds []int
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		for _, fd := range fds {
			syscall.Close(fd)
		}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
	}
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if errors.Is(err, syscall.EMFILE) {
			return release, nil
		}
		if err != nil {
			release()
			return nil, fmt.Errorf("fill descriptor table: %w", err)
		}
		fds = append(fds, fd)
	}
}

// waitUntil polls cond until it holds or limit passes.
func waitUntil(limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", limit, what)
		}
		<-tick.C
	}
	return nil
}
