package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire/names"
)

// ErrSocketInUse means a live process answers on the socket path.
var ErrSocketInUse = errors.New("in use by another process")

// InUseError is a socket path a live process listens on; PID is that process (from
// SO_PEERCRED), 0 when the kernel did not say.
type InUseError struct {
	Path string
	PID  int32
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = fmt.Sprintf("pid %d", e.PID)
	}
	return fmt.Sprintf("socket %s is in use by %s; stop it or choose another socket path", e.Path, who)
}

func (e *InUseError) Unwrap() error { return ErrSocketInUse }

// SocketFree checks that path can be bound: a legal length, and either nothing there or a
// stale socket (one nobody listens on, which Listen removes). It reports whether a stale
// socket is there. It dials a socket it finds, and changes nothing.
func SocketFree(path string) (stale bool, err error) {
	if err := names.CheckSocketPath(path); err != nil {
		return false, err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return false, fmt.Errorf("%s exists and is not a socket; remove it or choose another socket path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		defer c.Close()
		return false, &InUseError{Path: path, PID: peerPID(c)}
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	return false, fmt.Errorf("probe existing socket %s: %w", path, err)
}

func peerPID(c net.Conn) int32 {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int32
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = cred.Pid
		}
	})
	return pid
}

// Transient reports whether a bind error may go away by itself (out of descriptors or
// memory), so it is retried; any other error means the config as written cannot be served.
func Transient(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
