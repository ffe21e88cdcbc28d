package backend

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// maxProbeBody bounds the frame body we are willing to buffer while deciding whether a
// connection is a probe. A broker's probe body is about 50 bytes; trace fields add a few
// hundred at most. A longer declared body is data traffic and goes straight to the handler.
const maxProbeBody = 1024

// answerTimeout bounds writing the probe answer.
const answerTimeout = time.Second

// serveConn is the single entry point for every connection the backend serves: it answers
// an identity probe itself and hands anything else, bytes intact, to h. The caller owns the
// goroutine; the connection is closed when serveConn returns.
func (s *Server) serveConn(ctx context.Context, c net.Conn, h Handler) {
	defer c.Close()
	conn, probe := s.peek(c)
	if probe != nil {
		_ = c.SetWriteDeadline(time.Now().Add(answerTimeout))
		if err := identity.Answer(c, probe, s.self); err != nil {
			s.report(fmt.Errorf("backend %s: %w", s.endpoint, err))
		}
		return
	}
	h(ctx, conn)
}

// peek reads at most one small frame's worth of bytes within the peek timeout. It returns
// the probe frame if those bytes are a v1 identity probe; otherwise a conn from which the
// handler reads every byte, the peeked ones first. It never waits longer than the peek
// timeout for a client that expects the server to speak first, and returns as soon as the
// first byte rules out a probe.
func (s *Server) peek(c net.Conn) (net.Conn, *wirepb.Frame) {
	_ = c.SetReadDeadline(time.Now().Add(s.peekTimeout))
	defer c.SetReadDeadline(time.Time{})

	buf := make([]byte, 0, wire.HeaderLen+maxProbeBody)
	fill := func(n int) bool {
		for len(buf) < n {
			m, err := c.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+m]
			if err != nil {
				return len(buf) >= n
			}
		}
		return true
	}
	if fill(1) && buf[0] == wire.FramingVersion && fill(wire.HeaderLen) {
		size, err := wire.ParseHeader(buf, maxProbeBody)
		if n := int(size); err == nil && fill(wire.HeaderLen+n) {
			var f wirepb.Frame
			err := proto.Unmarshal(buf[wire.HeaderLen:wire.HeaderLen+n], &f)
			if err == nil && identity.IsProbe(&f) {
				return nil, &f
			}
		}
	}
	if len(buf) == 0 {
		return c, nil
	}
	return &prefixConn{Conn: c, prefix: buf}, nil
}

// prefixConn replays bytes consumed while peeking before reading from the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// NetConn returns the underlying connection (for socket options or fd passing). Reading
// from it directly skips any peeked bytes not yet returned by Read.
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

// connSet tracks open connections so a drain that outlives the grace period can close them.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (cs *connSet) add(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.conns == nil {
		cs.conns = make(map[net.Conn]struct{})
	}
	cs.conns[c] = struct{}{}
}

func (cs *connSet) remove(c net.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.conns, c)
}

func (cs *connSet) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.conns {
		c.Close()
	}
}
