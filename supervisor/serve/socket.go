package serve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/rpbroker/broker/supervisor/preflight"
	"github.com/rpbroker/broker/wire/identity"
)

// ErrSocketInUse means a live process answers on the socket path; the error carries its
// pid (*preflight.InUseError).
var ErrSocketInUse = preflight.ErrSocketInUse

// PrepareDir creates dir 0700 when missing and refuses one that another user could reach:
// a symlink, not owned by our euid, or group/other-accessible (v1 rules). The launcher
// uses it for the runtime dir, which is the broker's own.
func PrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	return preflight.CheckDir(dir)
}

// Listen binds a control socket at path: its directory must exist and be safe
// (preflight.CheckDir; the supervisor creates the ones it may), a stale socket is
// reclaimed, a live one refused naming its pid, file mode 0600. The listener unlinks the
// path when closed.
func Listen(path string) (*net.UnixListener, error) {
	if err := preflight.CheckDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	stale, err := preflight.SocketFree(path)
	if err != nil {
		return nil, err
	}
	if stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
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
