package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fatalTB records a Fatal instead of failing the real test; like testing.T it ends the
// calling goroutine, so the helper under test runs on its own goroutine.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatal(args ...any) { f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalOf runs fn with a fatalTB and returns the Fatal message, "" if there was none.
func fatalOf(t *testing.T, fn func(tb testing.TB)) string {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestShortDir(t *testing.T) {
	var dir string
	t.Run("inner", func(t *testing.T) {
		dir = ShortDir(t)
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 || !fi.IsDir() {
			t.Fatalf("mode %v, want drwx------", fi.Mode())
		}
		// Room for a socket name well inside sun_path.
		if len(filepath.Join(dir, "rpb-v1-some-service-0123456789abcdef.sock")) > 100 {
			t.Fatalf("dir %q too long for socket paths", dir)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir after cleanup: %v, want removed", err)
	}
}

func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o755, 0o700, 0o644} {
		dst := filepath.Join(dir, fmt.Sprintf("dst-%o", mode))
		CopyFile(t, src, dst, mode)
		fi, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only take bits away from mode.
		if fi.Mode().Perm()&^mode != 0 || fi.Mode().Perm()&0o700 != mode&0o700 {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), mode)
		}
		if b, _ := os.ReadFile(dst); string(b) != "payload" {
			t.Errorf("content %q", b)
		}
	}
	if msg := fatalOf(t, func(tb testing.TB) { CopyFile(tb, filepath.Join(dir, "none"), filepath.Join(dir, "x"), 0o755) }); msg == "" {
		t.Error("copying a missing file did not fail the test")
	}
}

func TestSyncBufferConcurrent(t *testing.T) {
	var b SyncBuffer
	const writers, lines = 8, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for range lines {
				fmt.Fprintf(&b, "w%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	got := b.String()
	if n := strings.Count(got, "\n"); n != writers*lines {
		t.Fatalf("%d lines, want %d", n, writers*lines)
	}
	for i := range writers {
		if n := strings.Count(got, fmt.Sprintf("w%d\n", i)); n != lines {
			t.Errorf("writer %d: %d whole lines, want %d", i, n, lines)
		}
	}
}

func TestWait(t *testing.T) {
	calls := 0
	cases := []struct {
		name, wantFatal string
		run             func(tb testing.TB)
	}{
		{"WaitFor holds after polls", "", func(tb testing.TB) {
			WaitFor(tb, "three calls", func() bool { calls++; return calls >= 3 })
		}},
		{"WaitForErr nil at once", "", func(tb testing.TB) {
			WaitForErr(tb, time.Second, func() error { return nil })
		}},
		{"WaitForErr reports the last error", "condition not met within 20ms: attempt", func(tb testing.TB) {
			n := 0
			WaitForErr(tb, 20*time.Millisecond, func() error { n++; return fmt.Errorf("attempt %d", n) })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := fatalOf(t, tc.run)
			if tc.wantFatal == "" && msg != "" || !strings.HasPrefix(msg, tc.wantFatal) {
				t.Fatalf("fatal %q, want prefix %q", msg, tc.wantFatal)
			}
		})
	}
	if calls != 3 {
		t.Errorf("WaitFor called cond %d times, want 3", calls)
	}
}

func TestPollTimesOut(t *testing.T) {
	start := time.Now()
	err := poll(30*time.Millisecond, func() error { return errNotYet })
	if !errors.Is(err, errNotYet) {
		t.Fatalf("poll: %v, want errNotYet", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 5*time.Second {
		t.Fatalf("poll gave up after %v, want about 30ms", d)
	}
}

func TestRoundTrip(t *testing.T) {
	ep := filepath.Join(ShortDir(t), "echo.sock")
	ln, err := net.Listen("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for ctx.Err() == nil {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}
	})
	// Larger than the socket buffers, so a sequential write-then-read would deadlock.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	if got := RoundTrip(t, ep, payload); !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(payload))
	}
}
