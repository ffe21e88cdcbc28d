package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/handoff"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Handoff (broker.md §7, v1 wire). The broker connects to HandoffEndpoint ahead of
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

// serveHandoff runs one handoff connection: receive, validate, ack, then serve the
// client on this goroutine (no extra hop). A connection that never gets a token (a spare
// the broker did not use) ends with ctx.
func (s *Server) serveHandoff(ctx context.Context, c *net.UnixConn, h Handler, open *connSet) {
	client, err := s.receiveHandoff(ctx, c)
	c.Close()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, io.EOF) {
			s.report(fmt.Errorf("backend %s: handoff: %w", s.opts.HandoffEndpoint, err))
		}
		return
	}
	open.add(client)
	defer open.remove(client)
	defer client.Close()
	h(ctx, client)
}

// receiveHandoff returns the adopted client connection, or an error after declining (the
// received fd is closed on every error path).
func (s *Server) receiveHandoff(ctx context.Context, c *net.UnixConn) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tok, fd, err := recvToken(c)
	if err != nil {
		return nil, err
	}
	// From here on the fd is ours: decline closes it, accept wraps it.
	c.SetDeadline(time.Now().Add(offerTimeout))
	f, err := wire.ReadFrame(c, wire.MaxHelloBody)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("read offer: %w", err)
	}
	offer, err := handoff.DecodeOffer(f)
	if err != nil {
		unix.Close(fd)
		return nil, err // not a v1 offer: nothing sensible to answer
	}
	ack := &wirepb.HandoffAck{Token: offer.Token, CorrelationId: offer.CorrelationId}
	var client net.Conn
	switch {
	case len(tok) != handoff.TokenLen || fd < 0:
		ack.ErrorDetail = "no 16-byte token with a descriptor"
	case !bytes.Equal(offer.Token, tok):
		ack.ErrorDetail = "offer token does not match the passed token"
	case !s.seen.add(tok):
		ack.ErrorDetail = "token replayed"
	case s.opts.AcceptHandoff != nil && !s.opts.AcceptHandoff(tok):
		ack.ErrorDetail = "declined by backend"
	default:
		file := os.NewFile(uintptr(fd), "handoff-client")
		client, err = net.FileConn(file) // dups; the original is closed below
		file.Close()
		fd = -1
		if err != nil {
			ack.ErrorDetail = "adopt descriptor: " + err.Error()
		}
	}
	if fd >= 0 {
		unix.Close(fd)
	}
	ack.Accepted = client != nil
	b, err := handoff.AckFrame(wirepb.FrameKind_RESPONSE, f.RequestId, ack)
	if err == nil {
		_, err = c.Write(b)
	}
	switch {
	case err != nil:
		if client != nil {
			client.Close() // the broker will not relay; the client falls back
		}
		return nil, fmt.Errorf("write ack: %w", err)
	case client == nil:
		return nil, errors.New("declined: " + ack.ErrorDetail)
	}
	return client, nil
}

// recvToken reads the token message: 16 bytes with the client's fd as SCM_RIGHTS. It
// returns fd -1 when none came; extra descriptors are closed.
func recvToken(c *net.UnixConn) ([]byte, int, error) {
	tok := make([]byte, handoff.TokenLen)
	oob := make([]byte, unix.CmsgSpace(4*maxPassedFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(tok, oob)
	fds := rights(oob[:oobn])
	fd := -1
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
	if err == nil && n < len(tok) {
		// A stream may split the token; the fd travels with its first byte.
		c.SetReadDeadline(time.Now().Add(offerTimeout))
		_, err = io.ReadFull(c, tok[n:])
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, -1, err
	}
	return tok, fd, nil
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
	set  map[[handoff.TokenLen]byte]struct{}
	ring [][handoff.TokenLen]byte
	next int
}

// add records tok and reports whether it was new.
func (t *tokenSet) add(tok []byte) bool {
	k := [handoff.TokenLen]byte(tok)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.set == nil {
		t.set = make(map[[handoff.TokenLen]byte]struct{}, seenTokens)
		t.ring = make([][handoff.TokenLen]byte, seenTokens)
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
