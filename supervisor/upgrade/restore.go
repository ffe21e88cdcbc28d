package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// Restore reads the state the previous image handed over, if any: ok is false when this
// image was not started by an upgrade. It removes EnvStateFD from the environment (no
// child and no later upgrade may see a stale number) and closes the memfd. warn, when
// set, is told about fields of the state this image skips.
func Restore(warn func(string)) (st *statepb.State, ok bool, err error) {
	v, set := os.LookupEnv(EnvStateFD)
	if !set {
		return nil, false, nil
	}
	if err := os.Unsetenv(EnvStateFD); err != nil {
		return nil, true, fmt.Errorf("restore: unset %s: %w", EnvStateFD, err)
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, true, fmt.Errorf("restore: %s=%q is not a descriptor", EnvStateFD, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "broker-upgrade-state")
	defer f.Close()
	b, err := ReadState(f)
	if err != nil {
		return nil, true, fmt.Errorf("restore: %w", err)
	}
	st, err = Decode(b, warn)
	if err != nil {
		return nil, true, fmt.Errorf("restore: %w", err)
	}
	return st, true, nil
}

// Listener turns an inherited descriptor back into the listener of path. It checks that
// fd is a listening Unix stream socket bound to path and, when inode is not 0, that path
// still names the socket file of that inode; fd is closed either way (the listener holds
// its own close-on-exec duplicate).
func Listener(fd int32, path string, inode uint64) (*net.UnixListener, error) {
	if fd < 3 {
		return nil, fmt.Errorf("listener %s: descriptor %d is not an inherited one", path, fd)
	}
	unix.CloseOnExec(int(fd))
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := checkListening(int(fd), path); err != nil {
		return nil, fmt.Errorf("listener %s (fd %d): %w", path, fd, err)
	}
	if inode != 0 {
		got, err := Inode(path)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", path, err)
		}
		if got != inode {
			return nil, fmt.Errorf("listener %s: the path names inode %d now, the socket was inode %d", path, got, inode)
		}
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", path, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("listener %s: not a Unix listener (%T)", path, l)
	}
	// Whoever adopts it decides; the old image's listener never unlinked on close either.
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

func checkListening(fd int, path string) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("socket domain: %w", err)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("socket state: %w", err)
	}
	if dom != unix.AF_UNIX || typ != unix.SOCK_STREAM || acc != 1 {
		return errors.New("not a listening Unix stream socket")
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	if ua, ok := sa.(*unix.SockaddrUnix); !ok || ua.Name != path {
		return fmt.Errorf("bound to %v, not %s", sa, path)
	}
	return nil
}

// Inode is the inode number of the file at path (not following a last symlink).
func Inode(path string) (uint64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return st.Ino, nil
}

// File takes an inherited descriptor that is not a listener (an output pipe, a pidfd),
// close-on-exec again. A negative fd (none was kept) gives nil.
func File(fd int32, name string) *os.File {
	if fd < 0 {
		return nil
	}
	unix.CloseOnExec(int(fd))
	return os.NewFile(uintptr(fd), name)
}
