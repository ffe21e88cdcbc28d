package client

// The rest of net.Conn for lazyConn: addresses and deadlines follow whichever
// connection is current (the control socket until the handoff settles).

import (
	"net"
	"time"
)

// current is the connection that serves the wrapper now (the control connection while
// unsettled).
func (l *lazyConn) current() net.Conn {
	l.dmu.Lock()
	defer l.dmu.Unlock()
	if l.c != nil {
		return l.c
	}
	return l.ctl
}

func (l *lazyConn) LocalAddr() net.Addr  { return l.current().LocalAddr() }
func (l *lazyConn) RemoteAddr() net.Addr { return l.current().RemoteAddr() }

func (l *lazyConn) SetDeadline(t time.Time) error {
	l.SetReadDeadline(t)
	return l.SetWriteDeadline(t)
}

func (l *lazyConn) SetReadDeadline(t time.Time) error {
	l.dmu.Lock()
	defer l.dmu.Unlock()
	l.rdl = t
	if l.c != nil {
		return l.c.SetReadDeadline(t)
	}
	return nil // settle applies it
}

func (l *lazyConn) SetWriteDeadline(t time.Time) error {
	l.dmu.Lock()
	defer l.dmu.Unlock()
	l.wdl = t
	if l.c != nil {
		return l.c.SetWriteDeadline(t)
	}
	return nil
}
