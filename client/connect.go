package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// minRetryWait is the wait after a retryable refusal that carried no retry_after.
const minRetryWait = 10 * time.Millisecond

// Connect negotiates service at version with the broker on socket and returns a data
// connection to the backend: the adopted control connection after a handoff (WithHandoff)
// or a new connection to backend_pipe. A refusal is a *RefusedError.
func Connect(ctx context.Context, socket, service, version string, opts ...Option) (net.Conn, *wirepb.Negotiated, error) {
	o := options{handoffWait: DefaultHandoffWait}
	for _, f := range opts {
		f(&o)
	}
	key := cacheKey{socket, service, version}
	if o.cache != nil {
		if n := o.cache.get(key); n != nil {
			if c, err := dialPipe(ctx, n.BackendPipe); err == nil {
				if err := writeEarly(c, o.early); err != nil {
					return nil, nil, err
				}
				return c, n, nil
			}
			o.cache.forget(key) // backend moved or died: ask the broker again
		}
	}
	for attempt := 0; ; attempt++ {
		c, n, err := o.connectOnce(ctx, socket, service, version)
		if err == nil {
			if o.cache != nil {
				o.cache.put(key, n)
			}
			return c, n, nil
		}
		var re *RefusedError
		if !errors.As(err, &re) || attempt >= o.retries || !retryable(re.Code) {
			return nil, nil, err
		}
		wait := max(re.RetryAfter, minRetryWait)
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
			return nil, nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("%w (retry abandoned: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

func retryable(c wirepb.ErrorCode) bool {
	switch c {
	case wirepb.ErrorCode_ERROR_RATE_LIMITED, wirepb.ErrorCode_ERROR_FD_PRESSURE, wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED:
		return true
	}
	return false
}

// connectOnce is one Hello followed by adoption or a dial of backend_pipe; either way
// the early data goes out exactly once.
func (o *options) connectOnce(ctx context.Context, socket, service, version string) (net.Conn, *wirepb.Negotiated, error) {
	h := &wirepb.Hello{ClientLibName: LibName, PeerPid: uint32(os.Getpid())}
	if o.hello != nil {
		o.hello(h)
	}
	h.ClientMinProtocol, h.ClientMaxProtocol = wire.ProtocolVersion, wire.ProtocolVersion
	h.ServiceName, h.WantedVersion = service, version
	h.ClientCapabilities |= o.caps
	askEarly := o.handoff && len(o.early) > 0 && len(o.early) <= MaxEarlyData
	if askEarly {
		h.ClientCapabilities |= wire.CapEarlyData
	}
	if o.handoff {
		h.ClientCapabilities |= wire.CapWriteAhead
	}
	f, err := NewHelloFrame(h)
	if err != nil {
		return nil, nil, err
	}
	var withHello []byte // early data written behind the Hello, in the same write
	if askEarly {
		withHello = o.early
	}
	conn, reply, err := exchange(ctx, socket, f, withHello)
	if err != nil {
		return nil, nil, err
	}
	n, err := DecodeHelloReply(reply)
	if err != nil {
		conn.Close() // a refusal: the broker read only the Hello, nobody read the early data
		return nil, nil, err
	}
	pending := o.early // still to be written on the connection returned
	if askEarly {
		pending = nil // on the control connection already, unread so far
	}
	if o.handoff && len(n.HandlePassedToken) == 16 && n.ServerCapabilities&wire.CapHandlePassing != 0 {
		early := askEarly && n.ServerCapabilities&wire.CapEarlyData != 0
		if early || (!askEarly && n.ServerCapabilities&wire.CapWriteAhead != 0) {
			// The EVENT is settled by the first Read, or the first Write that may not go
			// ahead of it (lazy.go).
			l := newLazyConn(conn, n, o.deadline(ctx), n.ServerCapabilities&wire.CapWriteAhead != 0)
			if early {
				l.early = o.early // with the Hello already
			} else if err := writeEarly(l, pending); err != nil { // over MaxEarlyData: settles first
				return nil, nil, err
			}
			return l, n, nil
		}
		ok, late := adopt(conn, n, o.deadline(ctx))
		switch {
		case ok:
			if err := writeEarly(conn, pending); err != nil {
				return nil, nil, err
			}
			return conn, n, nil
		case late && askEarly:
			conn.Close()
			return nil, nil, ErrLateHandoff
		}
		// Nothing went ahead or nobody adopted: a late adoption (fenced) costs nothing.
	}
	conn.Close()
	if askEarly {
		// Our broker hands off nothing but granted early data when bit 1 is set
		// (registered.Route), so without the grant nobody read it: it goes to backend_pipe.
		pending = o.early
	}
	c, err := dialPipe(ctx, n.BackendPipe)
	if err != nil {
		return nil, nil, err
	}
	if err := writeEarly(c, pending); err != nil {
		return nil, nil, err
	}
	return c, n, nil
}

// deadline bounds the wait for the handoff-ready EVENT.
func (o *options) deadline(ctx context.Context) time.Time {
	dl := time.Now().Add(o.handoffWait)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	return dl
}

func dialPipe(ctx context.Context, pipe string) (net.Conn, error) {
	if pipe == "" {
		return nil, errors.New("negotiated without backend_pipe")
	}
	c, err := dialUnix(ctx, pipe)
	if err != nil {
		return nil, fmt.Errorf("connect to backend %s: %w", pipe, err)
	}
	return c, nil
}
