package upgrade

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// runSleeper waits for SIGTERM and exits 7: a SIGKILL it got earlier (its parent thread's
// death signal) makes it die "killed" instead, however late the SIGTERM comes.
func runSleeper() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("ready")
	<-term
	return 7
}

// runKeeper is a broker in miniature. Before the exec it listens on envSock, starts a
// sleeper with PR_SET_PDEATHSIG, prints "pid inode sleeper-pid" and waits for a line on
// stdin; then it hands the listener and a pidfd of the sleeper to a re-exec of itself.
// After the exec it restores both, accepts one connection (queued in the backlog during
// the exec), answers "pid inode sleeper-status" on it and exits.
func runKeeper(ctx context.Context) int {
	st, ok, err := Restore(nil)
	if err == nil && ok {
		err = afterExec(st)
	} else if err == nil {
		err = beforeExec(ctx)
	}
	fmt.Fprintln(os.Stderr, "keeper:", err)
	return 1
}

// threads are the main thread and one other, which lives until the exec (its exit alone
// would fire the death signal of a child it started).
type threads struct{ main, other *osthread.Thread }

func (th threads) on(where string, fn func()) {
	if where == "main" {
		th.main.Do(fn)
		return
	}
	th.other.Do(fn)
}

func beforeExec(ctx context.Context) error {
	th := threads{main: osthread.FromContext(ctx), other: osthread.New()}
	go th.other.Serve(nil) // until the exec
	path := os.Getenv(envSock)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	ino, err := Inode(path)
	if err != nil {
		return err
	}
	sleeper := exec.Command(os.Args[0])
	sleeper.Env = append(os.Environ(), envRole+"=sleeper")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := sleeper.StdoutPipe()
	if err != nil {
		return err
	}
	th.on(os.Getenv(envStartOn), func() { err = sleeper.Start() })
	if err != nil {
		return err
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		return fmt.Errorf("sleeper said %q: %v", line, err)
	}
	pidfd, err := unix.PidfdOpen(sleeper.Process.Pid, 0)
	if err != nil {
		return err
	}
	var h Handover
	lfd, err := h.KeepConn(ln, path)
	if err != nil {
		return err
	}
	pfd, err := h.Keep(pidfd, "sleeper pidfd")
	if err != nil {
		return err
	}
	unix.Close(pidfd)
	b, err := Encode(&statepb.State{
		Pid:      int32(os.Getpid()),
		Services: []*statepb.Service{{Name: "test", SocketPath: path, ListenerFd: lfd, Inode: ino}},
		Backends: []*statepb.Backend{{Pid: int32(sleeper.Process.Pid), Pidfd: pfd, StdoutFd: -1, StderrFd: -1}},
	})
	if err != nil {
		return err
	}
	mfd, err := WriteMemfd(b)
	if err != nil {
		return err
	}
	fmt.Printf("%d %d %d\n", os.Getpid(), ino, sleeper.Process.Pid)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	th.on(os.Getenv(envExecOn), func() { err = h.Exec(os.Args[0], os.Args, os.Environ(), mfd) })
	return err
}

func afterExec(st *statepb.State) error {
	if st.GetPid() != int32(os.Getpid()) {
		return fmt.Errorf("pid %d after the exec, %d before", os.Getpid(), st.GetPid())
	}
	// A SIGHUP (a reload) landing before the new image asks for it is ignored, not fatal:
	// the ignored disposition came across the exec.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		return err
	}
	svc := st.GetServices()[0]
	ln, err := Listener(svc.GetListenerFd(), svc.GetSocketPath(), svc.GetInode())
	if err != nil {
		return err
	}
	defer ln.Close()
	be := st.GetBackends()[0]
	pidfd := File(be.GetPidfd(), "sleeper pidfd")
	defer pidfd.Close()
	// Through the pidfd: it must still name the sleeper, and the sleeper must still be
	// this process's child (waitid on a pidfd of a non-child fails with ECHILD).
	if err := unix.PidfdSendSignal(int(pidfd.Fd()), unix.SIGTERM, nil, 0); err != nil {
		return fmt.Errorf("signal the sleeper: %w", err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PIDFD, int(pidfd.Fd()), &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		return fmt.Errorf("wait for the sleeper: %w", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(int(be.GetPid()), &ws, 0, nil); err != nil {
		return fmt.Errorf("reap the sleeper: %w", err)
	}
	status := fmt.Sprintf("exit=%d", ws.ExitStatus())
	if ws.Signaled() {
		status = "killed=" + ws.Signal().String()
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	ino, err := Inode(svc.GetSocketPath())
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c, "%d %d %s\n", os.Getpid(), ino, status); err != nil {
		return err
	}
	os.Exit(0) // the deferred closes are the kernel's at exit
	return nil
}

// TestExecKeepsListenerAndChildren re-execs a real process: the listener (and a client
// waiting in its backlog) and the pid survive; a child survives only when it was started
// from, and the exec made on, the main thread.
func TestExecKeepsListenerAndChildren(t *testing.T) {
	for _, tc := range []struct {
		startOn, execOn string
		sleeper         string
	}{
		{"main", "main", "exit=7"},
		// The exec from another thread ends the main thread, the sleeper's parent thread.
		{"main", "other", "killed=killed"},
		// The sleeper's parent thread is not the one that survives the exec.
		{"other", "main", "killed=killed"},
	} {
		t.Run("start on "+tc.startOn+", exec on "+tc.execOn, func(t *testing.T) {
			sock := filepath.Join(testutil.ShortDir(t), "ctl.sock")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envRole+"=keeper", envSock+"="+sock, envStartOn+"="+tc.startOn,
				envExecOn+"="+tc.execOn, "GORACE=atexit_sleep_ms=0")
			stdin, stdout, stderr := testutil.StartPiped(t, cmd)
			var pid, sleeperPID int
			var ino uint64
			line, err := stdout.ReadString('\n')
			if _, serr := fmt.Sscanf(line, "%d %d %d", &pid, &ino, &sleeperPID); err != nil || serr != nil {
				t.Fatalf("keeper printed %q (%v)\n%s", line, err, stderr.String())
			}
			if pid != cmd.Process.Pid {
				t.Fatalf("keeper reports pid %d, started %d", pid, cmd.Process.Pid)
			}
			// Connected before the exec, accepted after it: the backlog survives.
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(stdin, "exec\n"); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			reply, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatalf("no reply after the exec: %v\n%s", err, stderr.String())
			}
			want := fmt.Sprintf("%d %d %s\n", pid, ino, tc.sleeper)
			if reply != want {
				t.Fatalf("after the exec: %q, want %q (pid, socket inode, sleeper)\n%s", reply, want, stderr.String())
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("keeper: %v\n%s", err, stderr.String())
			}
			if strings.Contains(stderr.String(), "keeper:") {
				t.Fatalf("keeper failed: %s", stderr.String())
			}
		})
	}
}

// A failed exec leaves the process as it was: os/signal still delivers SIGHUP and SIGUSR2
// (their handlers were put back), and the kept descriptors are close-on-exec again.
func TestFailedExecRestores(t *testing.T) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(ch)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var h Handover
	fd, err := h.KeepConn(r, "pipe")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mfd, err := WriteMemfd([]byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	defer mfd.Close()
	if err := h.Exec("/nonexistent/broker", []string{"broker"}, nil, mfd); err == nil || !strings.Contains(err.Error(), "execve /nonexistent/broker") {
		t.Fatalf("Exec of a missing binary: %v", err)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("kept fd %d after a failed exec: flags %#x, %v; want close-on-exec", fd, flags, err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR2} {
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ch:
			if got != sig {
				t.Fatalf("got %v, want %v", got, sig)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v not delivered after a failed exec", sig)
		}
	}
}
