package handoff

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/rpbroker/broker/wire"
)

// Capability probe (ours): a spare is proven to relay without spending a client on it.
// Run sends each fresh spare a probe: the 16-byte all-zero token WITHOUT a descriptor
// (so no v1 backend can take it for a handoff), then an offer with relay, reuse and
// probe (field 18) set. An ext backend answers accepted=false with relayed, reuse and
// probe echoed and reads the next exchange on the same connection: the spare enters
// the pool proven, and early data can be granted to the very first client. A v1
// backend declines a token without a descriptor or hangs up; the broker then remembers
// that pid as v1 and dials its spares plainly, without probing again for Options.Reprobe
// (a minute by default: a probe that only timed out on a busy backend is retried).

// maxProbeWait bounds the wait for a probe answer (a backend that never answers is v1).
const maxProbeWait = time.Second

// maxV1PIDs bounds the pids remembered as v1 when any peer of our uid is accepted.
const maxV1PIDs = 64

// probeRelayID is the relay connection id a probe offers; no client is behind it.
const probeRelayID = 1

// shouldProbe reports whether a fresh spare to pid is probed: not for a pid found v1
// less than Reprobe ago.
func (d *Dispatcher) shouldProbe(pid int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, v1 := d.v1pids[pid]
	return !v1 || time.Since(at) >= d.o.Reprobe
}

// markV1 remembers that pid answered a probe as a v1 backend, forgetting other pids
// when the verified pid is known (only its spares are ever dialled).
func (d *Dispatcher) markV1(pid, expect int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.v1pids == nil || expect >= 0 || len(d.v1pids) >= maxV1PIDs {
		d.v1pids = make(map[int]time.Time)
	}
	d.v1pids[pid] = time.Now()
}

// probe runs the capability exchange on a freshly dialled spare and returns what the
// backend proved; on error the caller closes c.
func (d *Dispatcher) probe(ctx context.Context, c *net.UnixConn) (wire.HandoffExt, error) {
	d.probes.Add(1)
	var tok [wire.HandoffTokenLen]byte
	offer, err := wire.HandoffOfferFrameExt(tok[:], "", 0, wire.HandoffExt{RelayConnID: probeRelayID, Reuse: true, Probe: true, Quiet: true})
	if err != nil {
		return wire.HandoffExt{}, err
	}
	c.SetDeadline(time.Now().Add(min(d.o.AckTimeout, maxProbeWait)))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// The token alone, as v1 sends it, then the offer.
	if _, err := c.Write(tok[:]); err != nil {
		return wire.HandoffExt{}, fmt.Errorf("probe: write token: %w", err)
	}
	if _, err := c.Write(offer); err != nil {
		return wire.HandoffExt{}, fmt.Errorf("probe: write offer: %w", err)
	}
	body, err := wire.ReadFrameBody(c, wire.MaxHandoffBody)
	if err != nil {
		return wire.HandoffExt{}, fmt.Errorf("probe: read ack: %w: %w", wire.ErrNotExt, err)
	}
	ext, err := wire.ParseHandoffProbeAck(body)
	if err != nil {
		return wire.HandoffExt{}, fmt.Errorf("probe: %w", err)
	}
	if !stop() {
		return wire.HandoffExt{}, ctx.Err()
	}
	c.SetDeadline(time.Time{})
	ext.Probe = false // what the spare proved, as an ack would have
	return ext, nil
}

// dialSpare dials a spare for the pool and, for a backend not known as v1, proves it by
// a probe. A failed probe marks the pid v1 and dials once more, plainly. The spare
// returned is dialling or probing, for put.
func (d *Dispatcher) dialSpare(ctx context.Context, expect int) (*spare, error) {
	s, err := d.dial(ctx, expect)
	if err != nil || !d.shouldProbe(s.pid) {
		return s, err
	}
	if err := d.move(s, probing); err != nil {
		return nil, err
	}
	ext, err := d.probe(ctx, s.c)
	if err == nil {
		s.ext, s.at = ext, time.Now()
		return s, nil
	}
	d.move(s, closed)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	d.markV1(s.pid, expect)
	d.o.Log.Info().Err(err).Int("pid", s.pid).Str("endpoint", d.o.Endpoint).Stringer("reprobe_after", d.o.Reprobe).
		Msg("handoff backend answered as v1: no early data or write-ahead; its spares are dialled plainly until a later probe")
	return d.dial(ctx, expect)
}
