package serve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/names"
)

// ErrSocketInUse means a live process answers on the socket path.
var ErrSocketInUse = errors.New("in use by another process")

// PrepareDir creates dir 0700 when missing and refuses one that another user could reach:
// a symlink, not owned by our euid, or group/other-accessible (v1 rules).
func PrepareDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create socket directory %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("socket directory %s is a symlink; point the socket at a real directory", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is owned by uid %d, not %d; use a directory you own", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("socket directory %s has mode %04o; other users could reach it: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// Listen binds a control socket at path: directory checked, a stale socket reclaimed, a
// live one refused, file mode 0600. The listener unlinks the path when closed.
func Listen(path string) (*net.UnixListener, error) {
	if err := names.CheckSocketPath(path); err != nil {
		return nil, err
	}
	if err := PrepareDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := reclaimStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	// The 0700 directory closes the window between bind and chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod 0600 %s: %w", path, err)
	}
	return ln, nil
}

// reclaimStale removes a socket file nobody listens on; a live listener is refused.
func reclaimStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another socket path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s is %w; stop it or choose another socket path", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("probe existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// Cred is the kernel-verified identity of a socket peer.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCred reads SO_PEERCRED of a Unix connection.
func PeerCred(c *net.UnixConn) (Cred, error) {
	uc, err := identity.PeerCred(c)
	if err != nil {
		return Cred{}, err
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}
