package backend

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/rpbroker/broker/wire/names"
)

// staleProbeTimeout bounds the connect that decides whether an existing socket is alive.
const staleProbeTimeout = 200 * time.Millisecond

// adopt turns the inherited listening socket fd into a listener. The broker owns the
// path, so closing the listener must not unlink it.
func adopt(fd int) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "rpb-backend-listener")
	if f == nil {
		return nil, fmt.Errorf("adopt listener fd %d: invalid descriptor", fd)
	}
	// FileListener dups the descriptor; the original is closed so it does not leak into
	// children we might start.
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("adopt listener fd %d: %w", fd, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("adopt listener fd %d: %s listener, want unix", fd, l.Addr().Network())
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// bind listens on path with mode 0600, replacing a stale socket left by a dead process but
// never one that still accepts connections, and never a file that is not a socket.
func bind(path string) (*net.UnixListener, error) {
	if err := names.CheckSocketPath(path); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	// The listener unlinks the path when closed: the socket is ours.
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bind %s: chmod: %w", path, err)
	}
	return ln, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket (mode %v)", path, fi.Mode())
	}
	c, err := net.DialTimeout("unix", path, staleProbeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s is in use by another process", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is stale: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
