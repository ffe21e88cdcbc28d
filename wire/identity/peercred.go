package identity

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// PeerCred returns the kernel-verified pid, uid and gid of a Unix socket peer
// (SO_PEERCRED): for an accepted connection the connecting process, for a dialled one the
// process that called listen.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred, nil
}
