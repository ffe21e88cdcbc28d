package upgrade

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvStateFD names, in the new image's environment, the descriptor of the state memfd.
// Every other descriptor kept across the exec is named inside the state. Not a v1 name:
// it never reaches a backend (Restore removes it before anything is started).
const EnvStateFD = "BROKER_UPGRADE_STATE_FD"

// WriteMemfd returns a sealed memfd holding b, positioned at 0. It is close-on-exec until
// Handover.Exec hands it over.
func WriteMemfd(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("broker-upgrade-state", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "broker-upgrade-state")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("write state memfd: %w", err)
	}
	// Sealed: nothing in either image can alter the state once written.
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal state memfd: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("rewind state memfd: %w", err)
	}
	return f, nil
}

// ReadState reads an encoded state from f's start (a memfd or a state file), at most
// MaxStateSize plus the header.
func ReadState(f *os.File) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, MaxStateSize+headerSize+1), MaxStateSize+headerSize+1))
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", f.Name(), err)
	}
	return b, nil
}

// Handover is the set of descriptors the new image inherits. Each is a duplicate the
// Handover owns, close-on-exec until Exec: a child started meanwhile never sees one.
type Handover struct {
	// Raw numbers, not *os.File: a duplicate shares O_NONBLOCK with the original, and
	// os.File.Fd would switch both to blocking under the netpoller.
	fds   []int
	names []string
}

// Keep duplicates fd and returns the number the duplicate keeps across the exec.
func (h *Handover) Keep(fd int, name string) (int32, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return -1, fmt.Errorf("keep %s: dup: %w", name, err)
	}
	h.fds, h.names = append(h.fds, nfd), append(h.names, name)
	return int32(nfd), nil
}

// KeepConn keeps the descriptor behind c (a listener, a pipe, a pidfd as *os.File)
// without disturbing c's own use of it.
func (h *Handover) KeepConn(c syscall.Conn, name string) (int32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("keep %s: %w", name, err)
	}
	kept, kerr := int32(-1), error(nil)
	if err := rc.Control(func(fd uintptr) { kept, kerr = h.Keep(int(fd), name) }); err != nil {
		return -1, fmt.Errorf("keep %s: %w", name, err)
	}
	return kept, kerr
}

// Close closes every kept duplicate: the exec did not happen.
func (h *Handover) Close() error {
	var errs []error
	for i, fd := range h.fds {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("close kept %s: %w", h.names[i], err))
		}
	}
	h.fds, h.names = nil, nil
	return errors.Join(errs...)
}

// Exec replaces the process image with binary, keeping the pid, every child, the kept
// descriptors and state (the memfd from WriteMemfd, named by EnvStateFD in env). It
// returns only on failure, with every descriptor close-on-exec again.
//
// Call it on the OS thread that started every child, and let that be the main thread:
// PR_SET_PDEATHSIG fires when a child's parent *thread* exits, and an execve from any
// other thread ends the main thread along with the rest.
func (h *Handover) Exec(binary string, args, env []string, state *os.File) error {
	sfd, err := rawFD(state)
	if err != nil {
		return fmt.Errorf("state memfd: %w", err)
	}
	env = append(withoutVar(env, EnvStateFD), EnvStateFD+"="+strconv.Itoa(sfd))
	all := append(append([]int{}, h.fds...), sfd)
	// Held from the first cleared flag to the exec: no fork of another goroutine can
	// inherit a descriptor meant for the new image only.
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	for _, fd := range all {
		if _, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			err = fmt.Errorf("clear close-on-exec on fd %d: %w", fd, err)
			break
		}
	}
	if err == nil {
		var restore func()
		if restore, err = ignoreForExec(); err == nil {
			err = fmt.Errorf("execve %s: %w", binary, syscall.Exec(binary, args, env))
			restore()
		}
	}
	for _, fd := range all {
		unix.CloseOnExec(fd)
	}
	return err
}

// rawFD is f's descriptor number, read without os.File.Fd's switch to blocking mode.
func rawFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func withoutVar(env []string, name string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
