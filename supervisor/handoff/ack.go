package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// relayTimeout bounds writing the handoff-ready EVENT to the client.
const relayTimeout = time.Second

// awaitAck finishes a handoff whose ack is waited for (v1, or a spare that has not proven
// relay and reuse): writes the offer when send left it, reads the ack, relays the EVENT
// unless the backend did, and keeps the spare when the backend reads another exchange
// on it.
func (d *Dispatcher) awaitAck(ctx context.Context, x *exchange, s *spare, offer []byte) error {
	kept := false
	defer func() {
		if !kept {
			d.move(s, closed)
		}
	}()
	if err := d.move(s, awaitingAck); err != nil {
		return err
	}
	var relay []byte
	var err error
	if !s.ext.Relayed {
		// Likely relayed by us: encode while the backend works, not after its ack.
		if relay, err = relayFrame(x.Token, x.ConnectionID); err != nil {
			return err
		}
	}
	c := s.c
	c.SetDeadline(x.start.Add(d.o.AckTimeout))
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
	got, err := wire.ParseHandoffAckExt(body, wirepb.FrameKind_RESPONSE, x.Token, x.ConnectionID)
	if err != nil {
		return err
	}
	if x.Early && !got.Relayed {
		// Broken promise: the handler may read the early data before our EVENT lands.
		d.o.Log.Warn().Str("event", "handoff_early_unrelayed").Int("pid", s.pid).
			Msg("backend proven to relay acked without relaying; relaying for it")
	}
	if !got.Relayed {
		if relay == nil {
			if relay, err = relayFrame(x.Token, x.ConnectionID); err != nil {
				return err
			}
		}
		x.client.SetWriteDeadline(time.Now().Add(relayTimeout))
		if _, err := x.client.Write(relay); err != nil {
			return fmt.Errorf("relay handoff-ready event to client: %w", err)
		}
	}
	// The backend reads another exchange on this connection: keep it as a spare, unless
	// ctx already poisoned its deadline.
	if got.Reuse && stop() {
		c.SetDeadline(time.Time{})
		s.ext, s.at, s.checked = got, time.Now(), false
		kept = true
		d.put(s)
	}
	return nil
}

// relayFrame is the handoff-ready EVENT the broker relays to the client (v1).
func relayFrame(token []byte, connID uint64) ([]byte, error) {
	return wire.HandoffAckFrame(wirepb.FrameKind_EVENT, connID, &wirepb.HandoffAck{Token: token, Accepted: true, CorrelationId: connID})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
