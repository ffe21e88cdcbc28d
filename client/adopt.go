package client

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// maxEventBody caps the handoff-ready EVENT; it is a few dozen bytes.
const maxEventBody = 64 << 10

// drainWait bounds reading what is already queued once the connection is fenced; after
// shutdown(SHUT_RD) nothing new can arrive, so this never really waits.
const drainWait = 100 * time.Millisecond

// ErrLateHandoff: the backend adopted the connection, and with it the early data, just
// as the wait for the EVENT ran out, after the read side was shut. The early data was
// delivered once and is not resent; the connection cannot read a reply. With early data
// granted, Connect returns before the EVENT and the first Read, Write or CloseWrite on
// the connection returns this error (lazy.go).
var ErrLateHandoff = errors.New("handoff completed after the wait: early data delivered, connection unusable")

// writeEarly writes early data on the connection Connect returns.
func writeEarly(c net.Conn, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return fmt.Errorf("early data: %w", err)
	}
	return nil
}

// adopt waits until dl for the handoff-ready EVENT matching n, reading exactly that frame
// (bytes the backend wrote behind it stay queued). ok: adopted, conn ready for data.
// Otherwise the read side is shut first, so that no backend can adopt conn any more (its
// EVENT write fails and it declines, unread), and what was queued is read: late reports
// a matching EVENT that slipped in before the fence, i.e. a backend adopted conn after
// all. EOF, a timeout with nothing queued or a mismatching frame mean nobody did.
func adopt(conn *net.UnixConn, n *wirepb.Negotiated, dl time.Time) (ok, late bool) {
	conn.SetReadDeadline(dl)
	fenced := false
	fill := func(p []byte) error {
		for off := 0; off < len(p); {
			k, err := conn.Read(p[off:])
			off += k
			var ne net.Error
			switch {
			case err == nil:
			case !fenced && errors.As(err, &ne) && ne.Timeout():
				fenced = true
				if err := conn.CloseRead(); err != nil {
					return err
				}
				conn.SetReadDeadline(time.Now().Add(drainWait))
			default:
				return err
			}
		}
		return nil
	}
	defer func() {
		if ok {
			conn.SetDeadline(time.Time{})
		}
	}()
	var hdr [wire.HeaderLen]byte
	if fill(hdr[:]) != nil {
		return false, false
	}
	size, err := wire.ParseHeader(hdr[:], maxEventBody)
	if err != nil {
		return false, false
	}
	body := make([]byte, size)
	if fill(body) != nil || !matchEvent(body, n) {
		return false, false
	}
	return !fenced, fenced
}

// matchEvent: an accepted 0xD0FF EVENT for this Negotiated's token and connection id.
func matchEvent(body []byte, n *wirepb.Negotiated) bool {
	f, err := wire.ParseEnvelope(body)
	if err != nil || f.Kind != wirepb.FrameKind_EVENT || f.Protocol != wire.ProtoHandoff {
		return false
	}
	ack, err := wire.ParseAck(f.Payload)
	return err == nil && ack.Accepted && bytes.Equal(ack.Token, n.HandlePassedToken) && ack.CorrelationID == n.ConnectionId
}
