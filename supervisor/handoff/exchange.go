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
//
// early says Negotiated granted CapEarlyData or CapWriteAhead: the client may already
// have written to client, so its fd goes only to a spare proven to relay the EVENT
// before reading (see EarlyData); without one, the handoff fails and the client, seeing
// EOF, sends its data through backend_pipe instead.
func (d *Dispatcher) Handoff(ctx context.Context, client *net.UnixConn, token []byte, connectionID uint64, service string, early bool, prepared ...*Prepared) error {
	if early {
		d.early.Add(1)
	}
	var p *Prepared
	if len(prepared) > 0 {
		p = prepared[0]
	}
	err := d.handoff(ctx, client, token, connectionID, service, early, p)
	client.Close()
	if d.stocked() < d.o.Spares {
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

func (d *Dispatcher) handoff(ctx context.Context, client *net.UnixConn, token []byte, connID uint64, service string, early bool, p *Prepared) error {
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
	oob, err := rightsOf(client)
	if err != nil {
		return fmt.Errorf("client fd: %w", err)
	}

	s, offer, quiet, err := d.send(ctx, expect, early, token, service, connID, oob, p)
	if err != nil {
		return err
	}
	if d.reusable(s) {
		defer d.lent.Add(-1) // send lent it; from here it goes back to the pool or is closed
	}
	if offer == nil && s.ext.Relayed && s.ext.Reuse && !d.o.SyncAcks {
		// Lazy ack: this backend has proven that it relays the EVENT itself and reads
		// further exchanges here, so nobody waits for this ack now. Our copy of the client
		// fd is closed on return (the fd in flight keeps the socket alive); the ack stays
		// queued on the spare and is read before its next offer (settle), or, quiet, is
		// not sent at all unless the backend declines.
		s.ack = &lazyAck{token: token, connID: connID, sent: start, quiet: quiet}
		s.at, s.checked = time.Now(), false
		d.lazy.Add(1)
		if quiet {
			d.quiet.Add(1)
		}
		d.put(s)
		return nil
	}
	var relay []byte
	if !s.ext.Relayed {
		// Likely relayed by us: encode while the backend works, not after its ack.
		if relay, err = relayFrame(token, connID); err != nil {
			s.c.Close()
			return err
		}
	}
	c := s.c
	reuse := false
	var got wire.HandoffExt
	defer func() {
		if !reuse || !d.put(spare{c: c, pid: s.pid, at: time.Now(), ext: got}) {
			c.Close()
		}
	}()
	c.SetDeadline(start.Add(d.o.AckTimeout))
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	if offer != nil {
		if _, err := c.Write(offer); err != nil {
			return fmt.Errorf("write offer: %w", err)
		}
	}
	body, err := wire.ReadFrameBody(c, wire.MaxHandoffBody)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) || isTimeout(err) {
			return fmt.Errorf("no ack within %v: %w", d.o.AckTimeout, err)
		}
		return fmt.Errorf("read ack: %w", err)
	}
	got, err = wire.ParseHandoffAckExt(body, wirepb.FrameKind_RESPONSE, token, connID)
	if err != nil {
		return err
	}
	if early && !got.Relayed {
		// Broken promise: the handler may read the early data before our EVENT lands.
		d.o.Log.Warn().Str("event", "handoff_early_unrelayed").Int("pid", s.pid).
			Msg("backend proven to relay acked without relaying; relaying for it")
	}
	if !got.Relayed {
		if relay == nil {
			if relay, err = relayFrame(token, connID); err != nil {
				return err
			}
		}
		client.SetWriteDeadline(time.Now().Add(relayTimeout))
		if _, err := client.Write(relay); err != nil {
			return fmt.Errorf("relay handoff-ready event to client: %w", err)
		}
	}
	// The backend reads another exchange on this connection: keep it as a spare, unless
	// ctx already poisoned its deadline.
	if got.Reuse && !d.o.V1Only && stop() {
		c.SetDeadline(time.Time{})
		reuse = true
	}
	return nil
}

// send writes the token bytes with the client fd on a verified spare, in one sendmsg.
// On a spare whose backend acked our extensions the offer frame rides in the same
// message (one wake-up for the backend), quiet when the spare proved it honours that.
// A v1 backend gets exactly the 16 token bytes, as v1 says, in case it reads them with a
// larger buffer: the offer is then returned for the caller to write.
func (d *Dispatcher) send(ctx context.Context, expect int, early bool, token []byte, service string, connID uint64, oob []byte, p *Prepared) (spare, []byte, bool, error) {
	var last error
	for range sendAttempts {
		s, ok := d.claim(p) // taken by Prepare, before Negotiated
		var err error
		if !ok || (expect >= 0 && s.pid != expect) {
			if ok {
				d.put(s)
			}
			if s, err = d.take(ctx, expect, early, true); err != nil {
				return spare{}, nil, false, err
			}
		}
		// A reusable spare counts as stocked while it carries the handoff, so that a refill
		// racing this handoff dials none for it.
		together := d.reusable(s)
		lend := func(n int64) {
			if together {
				d.lent.Add(n)
			}
		}
		lend(1)
		ext := wire.HandoffExt{}
		if !d.o.V1Only {
			ext = wire.HandoffExt{RelayConnID: connID, Reuse: true, Quiet: together && s.ext.Quiet && s.ext.Relayed && !d.o.SyncAcks}
		}
		offer, err := wire.HandoffOfferFrameExt(token, service, connID, ext)
		if err != nil {
			lend(-1)
			d.put(s)
			return spare{}, nil, false, err
		}
		msg := token
		if together {
			msg = append(append(make([]byte, 0, len(token)+len(offer)), token...), offer...)
		}
		s.c.SetWriteDeadline(time.Now().Add(d.o.AckTimeout))
		n, oobn, err := s.c.WriteMsgUnix(msg, oob, nil)
		if err == nil && n == len(msg) && oobn == len(oob) {
			if together {
				offer = nil
			}
			return s, offer, ext.Quiet, nil
		}
		lend(-1)
		s.c.Close()
		if n > 0 || err == nil {
			// Part of the message went out, perhaps with the fd: the backend sees a short
			// message and must reject it. Never send the fd a second time.
			return spare{}, nil, false, fmt.Errorf("sendmsg wrote %d of %d bytes: %v", n, len(msg), err)
		}
		last = fmt.Errorf("sendmsg: %w", err)
	}
	return spare{}, nil, false, last
}

// reusable: s carries our exchanges, token and offer in one message, and is kept after.
func (d *Dispatcher) reusable(s spare) bool { return s.ext.Reuse && !d.o.V1Only }

// relayFrame is the handoff-ready EVENT the broker relays to the client (v1).
func relayFrame(token []byte, connID uint64) ([]byte, error) {
	return wire.HandoffAckFrame(wirepb.FrameKind_EVENT, connID, &wirepb.HandoffAck{Token: token, Accepted: true, CorrelationId: connID})
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
