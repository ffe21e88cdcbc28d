package backend

// Receiving a handoff: the token and the client descriptor in one recvmsg, the set of
// tokens already seen, and adopting the descriptor as a net.Conn.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rpbroker/broker/wire"
	"golang.org/x/sys/unix"
)

// recvBufs are one handoff connection's receive buffers.
type recvBufs struct {
	data [recvBuf]byte
	oob  [oobBuf]byte
}

// oobBuf holds the control message of maxPassedFDs descriptors: unix.CmsgSpace(4*4).
const oobBuf = 32

// recvBuf bounds one token read: the 16 token bytes plus an offer frame sent in the same
// message (ext), so the offer usually costs no further read.
const recvBuf = 1024

// recvToken reads the token message: 16 bytes with the client's fd as SCM_RIGHTS. It
// returns fd -1 when none came (extra descriptors are closed) and the bytes that came
// after the token in the same read: the start of the offer when the broker sent both in
// one message. A read never runs past the message that carries descriptors, so a v1
// broker's separate offer stays in the socket.
func recvToken(c *net.UnixConn, bufs *recvBufs) (tok []byte, fd int, rest []byte, err error) {
	buf, oob := bufs.data[:], bufs.oob[:]
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds := rights(oob[:oobn])
	fd = -1
	if len(fds) > 0 {
		fd = fds[0]
		for _, x := range fds[1:] {
			unix.Close(x)
		}
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("control message truncated")
	}
	if err == nil && n < wire.HandoffTokenLen {
		// A stream may split the token; the fd travels with its first byte.
		c.SetReadDeadline(time.Now().Add(offerTimeout))
		_, err = io.ReadFull(c, buf[n:wire.HandoffTokenLen])
		n = wire.HandoffTokenLen
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, -1, nil, err
	}
	return buf[:wire.HandoffTokenLen], fd, buf[wire.HandoffTokenLen:n], nil
}

func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// tokenSet remembers the most recent tokens (a ring) so an offer cannot be replayed.
type tokenSet struct {
	mu   sync.Mutex
	set  map[[wire.HandoffTokenLen]byte]struct{}
	ring [][wire.HandoffTokenLen]byte
	next int
}

// add records tok and reports whether it was new.
func (t *tokenSet) add(tok []byte) bool {
	k := [wire.HandoffTokenLen]byte(tok)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.set == nil {
		t.set = make(map[[wire.HandoffTokenLen]byte]struct{}, seenTokens)
		t.ring = make([][wire.HandoffTokenLen]byte, seenTokens)
	}
	if _, dup := t.set[k]; dup {
		return false
	}
	if len(t.set) == seenTokens {
		delete(t.set, t.ring[t.next])
	}
	t.set[k] = struct{}{}
	t.ring[t.next] = k
	t.next = (t.next + 1) % seenTokens
	return true
}

// adoptClient wraps a received client socket without net.FileConn's dup and address lookups:
// os.NewFile registers a non-blocking descriptor with the runtime poller directly, so
// reads, writes and deadlines behave as on a net.Conn. The fd is owned by the result.
func adoptClient(fd int) (net.Conn, error) {
	// The descriptor shares the broker's open file description, which a Go broker made
	// non-blocking already: one system call to check rather than two to set.
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && flags&unix.O_NONBLOCK == 0 {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	return adoptedConn{os.NewFile(uintptr(fd), "handoff-client")}, nil
}

// adoptedConn is a handed-off client connection. The broker passed only the descriptor,
// so the addresses are the unnamed Unix address.
type adoptedConn struct{ *os.File }

func (adoptedConn) LocalAddr() net.Addr  { return &net.UnixAddr{Net: "unix"} }
func (adoptedConn) RemoteAddr() net.Addr { return &net.UnixAddr{Net: "unix"} }

// CloseWrite half-closes the connection, as net.UnixConn.CloseWrite does.
func (c adoptedConn) CloseWrite() error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}
