package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Handoff (docs/protocol.md, "Handoff"). The broker connects to HandoffEndpoint ahead of
// demand and, per handoff, sends on one connection: one message with the 16 token bytes
// and the client's fd as SCM_RIGHTS, then a REQUEST frame (0xD0FF) carrying HandoffOffer.
// The backend answers a RESPONSE HandoffAck and, if it accepted, serves the client with
// the same Handler as a direct connection. A handler must not write before it has read:
// the broker relays its handoff-ready EVENT to the client only after the ack, so bytes
// written earlier could reach the client first.

// offerTimeout bounds the wait for the offer frame once the token has arrived, and the
// ack write.
const offerTimeout = 5 * time.Second

// maxPassedFDs is how many descriptors one token message may carry before the control
// buffer truncates; the broker sends one, extras are closed.
const maxPassedFDs = 4

// seenTokens is how many recent tokens are remembered to reject a replayed offer.
const seenTokens = 4096

// Our extensions (wire/handoffext.go), used only when the broker's offer asks for them:
// the backend writes the handoff-ready EVENT to the client itself right after adopting
// the fd (one hop less for the client), keeps the connection for further exchanges (no
// dial per handoff) and, quiet, acks only a decline. On a reused connection the broker
// may send the token and the offer in one message: recvToken then gets both in one
// read; a v1 broker's separate offer waits in the socket.
//
// Invariant for relayed handoffs (what makes the client's early data safe): the EVENT
// is written before anything reads from the client, and a backend that cannot write it
// declines and closes the fd unread. The handler then finds the client's early bytes
// already buffered; a client that never saw the EVENT knows nobody read them.

// serveHandoff runs one handoff connection: receive, validate, ack, then serve the
// client. A v1 exchange serves the client on this goroutine (no extra hop). On a reused
// connection the handler starts on spawn and this goroutine, its stack already grown
// for the exchange, writes the ack (when one is due) and waits for the next exchange:
// after a relayed handoff the client is waiting and the broker is not, so the handler
// runs as soon as this goroutine parks. A quiet exchange (wire/handoffext.go) is not acked
// at all. A connection that never gets a token (a spare the broker did not use) ends
// with ctx.
func (s *Server) serveHandoff(ctx context.Context, c *net.UnixConn, h Handler, open *connSet, spawn func(func())) {
	bufs := new(recvBufs) // reused: nothing of an exchange is kept past it
	for {
		client, reuse, ack, err := s.receiveHandoff(ctx, c, bufs)
		if err != nil {
			c.Close()
			if ctx.Err() == nil && !errors.Is(err, io.EOF) {
				s.report(fmt.Errorf("backend %s: handoff: %w", s.opts.HandoffEndpoint, err))
			}
			return
		}
		if client == nil {
			continue // a capability probe, answered: the next exchange follows here
		}
		open.add(client)
		serve := func() {
			defer open.remove(client)
			defer client.Close()
			h(ctx, client)
		}
		if !reuse {
			c.Close()
			serve()
			return
		}
		spawn(serve)
		if ack != nil {
			c.SetWriteDeadline(time.Now().Add(offerTimeout))
			if _, err := c.Write(ack); err != nil {
				c.Close()
				s.report(fmt.Errorf("backend %s: handoff: write ack: %w", s.opts.HandoffEndpoint, err))
				return
			}
			c.SetWriteDeadline(time.Time{})
		}
	}
}

// receiveHandoff returns the adopted client connection and whether the broker will send
// another exchange on c, or an error after declining (the received fd is closed on every
// error path; a decline is acked, also a quiet one, and ends the connection). When it
// relayed the EVENT, it returns the ack unwritten, for the caller to write once the
// client is on its way, or none for a quiet exchange.
func (s *Server) receiveHandoff(ctx context.Context, c *net.UnixConn, bufs *recvBufs) (net.Conn, bool, []byte, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tok, fd, rest, err := recvToken(c, bufs)
	if err != nil {
		return nil, false, nil, err
	}
	// From here on the fd is ours: decline closes it, accept wraps it.
	body, err := readOffer(c, rest)
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, false, nil, fmt.Errorf("read offer: %w", err)
	}
	offer, err := wire.ParseHandoffOffer(body)
	if err != nil {
		unix.Close(fd)
		return nil, false, nil, err // not a v1 offer: nothing sensible to answer
	}
	ext := offer.Ext
	var answer wire.HandoffExt
	ack := &wirepb.HandoffAck{Token: offer.Token, CorrelationId: offer.CorrelationID}
	if ext.Probe && fd < 0 && isProbeToken(tok) && bytes.Equal(offer.Token, tok) {
		return nil, true, nil, answerProbe(c, offer.RequestID, ack, ext)
	}
	var client, declined net.Conn
	switch {
	case ext.Probe:
		ack.ErrorDetail = "malformed capability probe"
	case len(tok) != wire.HandoffTokenLen || fd < 0:
		ack.ErrorDetail = "no 16-byte token with a descriptor"
	case !bytes.Equal(offer.Token, tok):
		ack.ErrorDetail = "offer token does not match the passed token"
	case !s.seen.add(tok):
		ack.ErrorDetail = "token replayed"
	case s.opts.AcceptHandoff != nil && !s.opts.AcceptHandoff(tok):
		ack.ErrorDetail = "declined by backend"
	default:
		client, err = adoptClient(fd)
		fd = -1
		switch {
		case err != nil:
			ack.ErrorDetail = "adopt descriptor: " + err.Error()
		case ext.RelayConnID != 0:
			// Tell the client first: it is waiting, the broker is not. This write comes
			// before any read of a client byte, and a backend that could not make it
			// declines: that invariant makes a client's early data safe (CapEarlyData).
			// Whoever reads the early bytes has told the client so; a client that saw no
			// EVENT may send them again through backend_pipe.
			if err := relay(client, tok, ext.RelayConnID); err != nil {
				declined = client
				client = nil
				ack.ErrorDetail = "relay handoff-ready event: " + err.Error()
				break
			}
			answer.Relayed = true
		}
	}
	// A declined client is let go only once the decline is on its way to the broker: by
	// the time that client sees EOF, the broker can read why.
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if declined != nil {
			declined.Close()
		}
	}()
	ack.Accepted = client != nil
	answer.Reuse = ext.Reuse && ack.Accepted
	if answer.Relayed && answer.Reuse && ext.Quiet {
		c.SetReadDeadline(time.Time{})
		return client, true, nil, nil // quiet: an accepted exchange is not acked
	}
	b, err := wire.HandoffAckFrameExt(wirepb.FrameKind_RESPONSE, offer.RequestID, ack, answer)
	if err == nil && answer.Relayed {
		c.SetReadDeadline(time.Time{})
		return client, answer.Reuse, b, nil
	}
	if err == nil {
		c.SetWriteDeadline(time.Now().Add(offerTimeout))
		_, err = c.Write(b)
	}
	switch {
	case err != nil:
		if client != nil {
			client.Close() // the broker will not relay; the client falls back
		}
		return nil, false, nil, fmt.Errorf("write ack: %w", err)
	case client == nil:
		return nil, false, nil, errors.New("declined: " + ack.ErrorDetail)
	}
	c.SetDeadline(time.Time{}) // idle until the next exchange, however long
	return client, answer.Reuse, nil, nil
}

// isProbeToken: a capability probe carries the all-zero token (and no descriptor).
func isProbeToken(tok []byte) bool {
	return len(tok) == wire.HandoffTokenLen && bytes.Count(tok, []byte{0}) == wire.HandoffTokenLen
}

// answerProbe answers a capability probe (handoff/probe.go): no client, so nothing is
// accepted, no handler runs and no token is recorded; the answer says this backend
// relays the EVENT and reads the next exchange on c, and echoes the probe so that a v1
// decline cannot be taken for it.
func answerProbe(c *net.UnixConn, requestID uint64, ack *wirepb.HandoffAck, ext wire.HandoffExt) error {
	ack.ErrorDetail = "capability probe"
	answer := wire.HandoffExt{Relayed: ext.RelayConnID != 0, Reuse: ext.Reuse, Probe: true, Quiet: ext.Quiet}
	b, err := wire.HandoffAckFrameExt(wirepb.FrameKind_RESPONSE, requestID, ack, answer)
	if err == nil {
		c.SetWriteDeadline(time.Now().Add(offerTimeout))
		_, err = c.Write(b)
	}
	if err != nil {
		return fmt.Errorf("write probe answer: %w", err)
	}
	if !ext.Reuse {
		return io.EOF // the broker sends nothing more here
	}
	c.SetDeadline(time.Time{}) // idle until the next exchange, however long
	return nil
}

// relay writes the handoff-ready EVENT to the adopted client in one non-blocking write.
// A client's receive buffer holds at most Negotiated at this point, so the write does not
// block; if it ever did not go out whole, the caller declines and the client falls back.
func relay(client net.Conn, tok []byte, connID uint64) error {
	ev, err := wire.HandoffAckFrame(wirepb.FrameKind_EVENT, connID, &wirepb.HandoffAck{Token: tok, Accepted: true, CorrelationId: connID})
	if err != nil {
		return err
	}
	sc, ok := client.(syscall.Conn)
	if !ok {
		return errors.New("adopted connection has no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	n := 0
	if cerr := rc.Control(func(fd uintptr) { n, err = unix.Write(int(fd), ev) }); cerr != nil {
		return cerr
	}
	if err == nil && n != len(ev) {
		err = fmt.Errorf("short write %d of %d bytes", n, len(ev))
	}
	return err
}

// readOffer returns the body of the offer frame: from rest alone when the broker sent it
// with the token (ext), else read on from c. Nothing may follow the offer before our
// answer: bytes there mean a confused peer.
func readOffer(c *net.UnixConn, rest []byte) ([]byte, error) {
	if n, err := wire.ParseHeader(rest, wire.MaxHelloBody); err == nil {
		if uint64(len(rest)) == wire.HeaderLen+uint64(n) {
			return rest[wire.HeaderLen:], nil
		}
	}
	c.SetReadDeadline(time.Now().Add(offerTimeout))
	pre := bytes.NewReader(rest)
	body, err := wire.ReadFrameBody(io.MultiReader(pre, c), wire.MaxHelloBody)
	if err == nil && pre.Len() > 0 {
		err = fmt.Errorf("%d unexpected bytes after the offer", pre.Len())
	}
	return body, err
}
