package servicedef

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/testutil"
)

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"EMFILE", syscall.EMFILE, true},
		{"ENFILE", syscall.ENFILE, true},
		{"ENOMEM", syscall.ENOMEM, true},
		{"EINTR", syscall.EINTR, true},
		{"open EMFILE", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EMFILE}, true},
		{"wrapped twice", fmt.Errorf("servicedef dir /x: list: %w", &os.SyscallError{Syscall: "getdents64", Err: syscall.ENOMEM}), true},
		{"EACCES", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, false},
		{"ENOENT", &fs.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, false},
		{"ENOSPC (inotify watch limit)", fmt.Errorf("watch: %w", syscall.ENOSPC), false},
		{"ENOTDIR", syscall.ENOTDIR, false},
		{"insecure dir", fmt.Errorf("servicedef dir /x: mode 0755: %w", ErrInsecureDir), false},
		{"not exist", fs.ErrNotExist, false},
		{"text only", errors.New("too many open files"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isTransient(tc.err); got != tc.want {
				t.Fatalf("isTransient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// panicOnce is a logger hook that panics the first time it sees msg: user code (the
// caller's logger) that the Loader runs on its event path.
type panicOnce struct {
	msg   string
	armed atomic.Bool
}

func (h *panicOnce) Run(_ *zerolog.Event, _ zerolog.Level, msg string) {
	if msg == h.msg && h.armed.CompareAndSwap(true, false) {
		panic("hook panicked on " + msg)
	}
}

func TestLoaderRecoversPanics(t *testing.T) {
	for _, tc := range []struct {
		where   string
		message string                         // the log message whose hook panics
		trigger func(t *testing.T, dir string) // what makes the Loader log it
	}{
		{"log", "service definition loaded", func(t *testing.T, dir string) {
			renameOver(t, dir, "boom", encode(t, defWith("boom", "/bin/boom")))
		}},
		{"event", "ignoring file: its name is not <service>.servicedef with a valid service name", func(t *testing.T, dir string) {
			writeInPlace(t, dir, "Boom", encode(t, defWith("boom", "/bin/boom")))
		}},
		{"session", "watching servicedef directory", func(*testing.T, string) {}},
	} {
		t.Run(tc.where, func(t *testing.T) {
			dir := privateDir(t)
			renameOver(t, dir, "a", encode(t, defWith("a", "/bin/a")))
			hook := &panicOnce{msg: tc.message}
			hook.armed.Store(tc.where == "session") // the first session panics as it starts
			var mu sync.Mutex
			var got []string
			logs := &testutil.SyncBuffer{}
			l := NewLoader(dir, zerolog.New(logs).Hook(hook), WithPanicHandler(func(where string, v any) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, fmt.Sprintf("%s: %v", where, v))
			}), WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
			ch, cancel := l.Subscribe()
			defer cancel()
			changes := collect(t, ch)
			runLoader(t, l)
			testutil.WaitFor(t, "a loaded", func() bool { return binOf(l, "a") == "/bin/a" })

			if tc.where != "session" {
				hook.armed.Store(true)
			}
			tc.trigger(t, dir)
			handled := func() string {
				mu.Lock()
				defer mu.Unlock()
				return strings.Join(got, "\n")
			}
			testutil.WaitFor(t, "panic handler called for "+tc.where, func() bool { return handled() != "" })
			if want := tc.where + ": hook panicked on " + tc.message; handled() != want {
				t.Fatalf("panic handler got %q, want %q", handled(), want)
			}
			for _, s := range []string{`"level":"error"`, `"where":"` + tc.where + `"`, `"stack":"goroutine `, "recovered a panic in the servicedef loader"} {
				if !strings.Contains(logs.String(), s) {
					t.Errorf("log lacks %s:\n%s", s, logs)
				}
			}

			// The Loader goes on: the last good definition stays and a new one goes live.
			renameOver(t, dir, "next", encode(t, defWith("next", "/bin/next")))
			testutil.WaitFor(t, "definition after the panic", func() bool { return binOf(l, "next") == "/bin/next" })
			if binOf(l, "a") != "/bin/a" {
				t.Fatalf("a lost: %+v", l.Lookup("a"))
			}
			if tc.where == "log" { // the change whose logging panicked was still announced
				testutil.WaitFor(t, "boom announced", func() bool { return strings.Contains(kinds(changes(), 0), "boom:loaded") })
				if binOf(l, "boom") != "/bin/boom" {
					t.Fatalf("boom: %+v", l.Lookup("boom"))
				}
			}
		})
	}
}
