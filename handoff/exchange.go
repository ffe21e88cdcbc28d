package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// relayTimeout bounds writing the handoff-ready EVENT to the client.
const relayTimeout = time.Second

// sendAttempts bounds retries when a spare turns out dead at sendmsg time; a failed
// sendmsg delivered nothing, so another spare may be tried.
const sendAttempts = 3

// Handoff passes client to the backend for the Negotiated that carried token and
// connectionID (used as the correlation id). It owns client and closes the broker's copy
// on every path. A failure is silent for the client, which reconnects through
// backend_pipe; it is logged with its reason and returned for callers that count it.
func (d *Dispatcher) Handoff(ctx context.Context, client *net.UnixConn, token []byte, connectionID uint64, service string) error {
	err := d.handoff(ctx, client, token, connectionID, service)
	client.Close()
	if d.poolLen() < d.o.Spares {
		d.Kick() // refill after the fact: no dial competes with the handoff itself
	}
	if err != nil {
		d.failures.Add(1)
		d.o.Log.Warn().Err(err).Str("event", "handoff_failed").Str("service", service).
			Uint64("connection_id", connectionID).Str("endpoint", d.o.Endpoint).
			Msg("handoff failed; client falls back to backend_pipe")
		return err
	}
	d.handoffs.Add(1)
	d.o.Log.Debug().Str("event", "handoff").Str("service", service).Uint64("connection_id", connectionID).Msg("client handed off")
	return nil
}

func (d *Dispatcher) handoff(ctx context.Context, client *net.UnixConn, token []byte, connID uint64, service string) error {
	start := time.Now()
	if !d.tok.consume(token, start) {
		return ErrToken
	}
	if d.inflight.Add(1) > int64(d.o.MaxInflight) {
		d.inflight.Add(-1)
		return ErrBusy
	}
	defer d.inflight.Add(-1)
	expect, ok := d.expect()
	if !ok {
		return ErrNoBackend
	}
	// Encode everything first, so that nothing but syscalls sits between the ack and the
	// relay.
	var ext Ext
	if !d.o.V1Only {
		ext = Ext{RelayConnID: connID, Reuse: true}
	}
	offer, err := OfferFrameExt(token, service, connID, ext)
	if err != nil {
		return err
	}
	relay, err := AckFrame(wirepb.FrameKind_EVENT, connID, &wirepb.HandoffAck{Token: token, Accepted: true, CorrelationId: connID})
	if err != nil {
		return err
	}
	oob, err := rightsOf(client)
	if err != nil {
		return fmt.Errorf("client fd: %w", err)
	}

	s, err := d.send(ctx, expect, token, oob)
	if err != nil {
		return err
	}
	c := s.c
	reuse := false
	defer func() {
		if !reuse || !d.put(spare{c: c, pid: s.pid, at: time.Now()}) {
			c.Close()
		}
	}()
	c.SetDeadline(start.Add(d.o.AckTimeout))
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	if _, err := c.Write(offer); err != nil {
		return fmt.Errorf("write offer: %w", err)
	}
	body, err := wire.ReadFrameBody(c, maxControlBody)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) || isTimeout(err) {
			return fmt.Errorf("no ack within %v: %w", d.o.AckTimeout, err)
		}
		return fmt.Errorf("read ack: %w", err)
	}
	got, err := ParseAckExt(body, wirepb.FrameKind_RESPONSE, token, connID)
	if err != nil {
		return err
	}
	if !got.Relayed {
		client.SetWriteDeadline(time.Now().Add(relayTimeout))
		if _, err := client.Write(relay); err != nil {
			return fmt.Errorf("relay handoff-ready event to client: %w", err)
		}
	}
	// The backend reads another exchange on this connection: keep it as a spare, unless
	// ctx already poisoned its deadline.
	if got.Reuse && ext.Reuse && stop() {
		c.SetDeadline(time.Time{})
		reuse = true
	}
	return nil
}

// send writes the token bytes with the client fd on a verified spare, in one sendmsg.
func (d *Dispatcher) send(ctx context.Context, expect int, token, oob []byte) (spare, error) {
	var last error
	for range sendAttempts {
		s, err := d.take(ctx, expect)
		if err != nil {
			return spare{}, err
		}
		s.c.SetWriteDeadline(time.Now().Add(d.o.AckTimeout))
		n, oobn, err := s.c.WriteMsgUnix(token, oob, nil)
		if err == nil && n == len(token) && oobn == len(oob) {
			return s, nil
		}
		s.c.Close()
		if n > 0 || err == nil {
			// Part of the message went out, perhaps with the fd: the backend sees a short
			// token and must reject it. Never send the fd a second time.
			return spare{}, fmt.Errorf("sendmsg wrote %d of %d bytes: %v", n, len(token), err)
		}
		last = fmt.Errorf("sendmsg: %w", err)
	}
	return spare{}, last
}

// rightsOf builds the SCM_RIGHTS control message for the client's fd. The fd stays valid
// because the caller owns client until Handoff returns.
func rightsOf(c *net.UnixConn) ([]byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var oob []byte
	if err := rc.Control(func(fd uintptr) { oob = unix.UnixRights(int(fd)) }); err != nil {
		return nil, err
	}
	return oob, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
