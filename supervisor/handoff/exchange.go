package handoff

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
)

// sendAttempts bounds retries when a spare turns out dead at sendmsg time; a failed
// sendmsg delivered nothing, so another spare may be tried.
const sendAttempts = 3

// errShortSend: sendmsg returned no error but did not take the whole message.
var errShortSend = errors.New("short sendmsg")

// Request is one client's handoff, as its Negotiated announced it (RequestOf).
type Request struct {
	Token []byte // the one-time token Negotiated carried
	// ConnectionID is Negotiated's connection id: the offer's correlation id and the
	// EVENT's request id.
	ConnectionID uint64
	Service      string
	// Early says Negotiated granted bit 1 or 2 (Grant): the client may already have
	// written, so its fd goes only to a spare proven to relay the EVENT before it reads;
	// without one the handoff fails and the client, seeing EOF, sends its data through
	// backend_pipe instead.
	Early bool
}

// exchange is one handoff in progress: its request, its client and what the handoff
// found out on the way.
type exchange struct {
	Request
	client *net.UnixConn
	p      *Prepared // the Prepare done for it, nil for none
	start  time.Time
	expect int    // the pid the peer must have, -1 any of our uid
	oob    []byte // SCM_RIGHTS with the client's fd
	quiet  bool   // the offer asked for no ack unless declined
}

// Handoff passes client to the backend for r. It owns client and closes the broker's
// copy on every path. A failure is silent for the client, which reconnects through
// backend_pipe; it is logged with its reason and returned for callers that count it.
func (d *Dispatcher) Handoff(ctx context.Context, client *net.UnixConn, r Request) error {
	return d.handOff(ctx, &exchange{Request: r, client: client})
}

func (d *Dispatcher) handOff(ctx context.Context, x *exchange) error {
	if x.Early {
		d.early.Add(1)
	}
	err := d.exchange(ctx, x)
	x.client.Close()
	if d.refillDue() {
		d.Kick() // refill after the fact: no dial competes with the handoff itself
	}
	if err != nil {
		d.failures.Add(1)
		d.o.Log.Warn().Err(err).Str("event", "handoff_failed").Str("service", x.Service).
			Uint64("connection_id", x.ConnectionID).Str("endpoint", d.o.Endpoint).
			Msg("handoff failed; client falls back to backend_pipe")
		return err
	}
	d.handoffs.Add(1)
	d.o.Log.Debug().Str("event", "handoff").Str("service", x.Service).Uint64("connection_id", x.ConnectionID).Msg("client handed off")
	return nil
}

func (d *Dispatcher) exchange(ctx context.Context, x *exchange) error {
	x.start = time.Now()
	if !d.tok.consume(x.Token, x.start) {
		return ErrToken
	}
	if d.inflight.Add(1) > int64(d.o.MaxInflight) {
		d.inflight.Add(-1)
		return ErrBusy
	}
	defer d.inflight.Add(-1)
	var ok bool
	if x.expect, ok = d.expect(); !ok {
		return ErrNoBackend
	}
	var err error
	if x.oob, err = rightsOf(x.client); err != nil {
		return fmt.Errorf("client fd: %w", err)
	}
	s, offer, err := d.send(ctx, x)
	if err != nil {
		return err
	}
	if offer == nil && s.ext.Relayed && s.ext.Reuse {
		// Lazy ack (lazy.go): this backend has proven that it relays the EVENT itself and
		// reads further exchanges here, so nobody waits for this ack now. Our copy of the
		// client fd is closed on return (the fd in flight keeps the socket alive); the
		// ack stays queued on the spare and is read before its next offer (settle), or,
		// quiet, is not sent at all unless the backend declines.
		s.ack = &lazyAck{token: x.Token, connID: x.ConnectionID, sent: x.start, quiet: x.quiet}
		s.at, s.checked = time.Now(), false
		d.lazy.Add(1)
		if x.quiet {
			d.quiet.Add(1)
		}
		d.put(s)
		return nil
	}
	return d.awaitAck(ctx, x, s, offer)
}

// send writes the token bytes with the client fd on a verified spare, in one sendmsg.
// On a spare whose backend proved reuse the offer frame rides in the same message (one
// wake-up for the backend), quiet when the spare proved it honours that. Any other
// backend gets exactly the 16 token bytes, as v1 says, in case it reads them with a
// larger buffer: the offer is then returned for the caller to write. The spare
// returned is lent.
func (d *Dispatcher) send(ctx context.Context, x *exchange) (*spare, []byte, error) {
	var last error
	for range sendAttempts {
		s, err := d.spareFor(ctx, x)
		if err != nil {
			return nil, nil, err
		}
		together := s.ext.Reuse
		ext := wire.HandoffExt{RelayConnID: x.ConnectionID, Reuse: true, Quiet: together && s.ext.Quiet && s.ext.Relayed}
		offer, err := wire.HandoffOfferFrameExt(x.Token, x.Service, x.ConnectionID, ext)
		if err != nil {
			d.put(s)
			return nil, nil, err
		}
		msg := x.Token
		if together {
			msg = append(append(make([]byte, 0, len(x.Token)+len(offer)), x.Token...), offer...)
		}
		s.c.SetWriteDeadline(time.Now().Add(d.o.AckTimeout))
		n, oobn, err := s.c.WriteMsgUnix(msg, x.oob, nil)
		if err == nil && n == len(msg) && oobn == len(x.oob) {
			if together {
				offer = nil
			}
			x.quiet = ext.Quiet
			return s, offer, nil
		}
		d.move(s, closed)
		if n > 0 || err == nil {
			// Part of the message went out, perhaps with the fd: the backend sees a short
			// message and must reject it. Never send the fd a second time.
			return nil, nil, fmt.Errorf("sendmsg wrote %d of %d bytes: %w", n, len(msg), cmp.Or(err, errShortSend))
		}
		last = fmt.Errorf("sendmsg: %w", err)
	}
	return nil, nil, last
}

// spareFor returns a lent spare for x: the one Prepare held for it when that still
// leads to the verified backend, else one taken now.
func (d *Dispatcher) spareFor(ctx context.Context, x *exchange) (*spare, error) {
	if s := d.claim(x.p); s != nil {
		if x.expect < 0 || s.pid == x.expect {
			return s, nil
		}
		d.put(s)
	}
	return d.take(ctx, want{expect: x.expect, early: x.Early, dial: true, to: lent})
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
