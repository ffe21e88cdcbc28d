package handoff

import (
	"context"
	"net"
	"time"
)

// heldMax is how long a spare stays held for a Prepared whose handoff never came (the
// Negotiated write failed); Run's pass puts it back into the pool after that.
const heldMax = time.Second

// Prepared is a handoff made ready before Negotiated is written (Prepare): a spare is
// taken, its lazy ack read, so that after Negotiated only the sendmsg is left.
type Prepared struct {
	token   []byte
	connID  uint64
	service string
	early   bool
}

// Prepare readies the handoff of the Negotiated carrying token and connID, without
// dialling. Call HandoffPrepared with the result; a Prepared that is never handed off
// costs nothing but a spare held for heldMax.
func (d *Dispatcher) Prepare(ctx context.Context, token []byte, connID uint64, service string, early bool) *Prepared {
	p := &Prepared{token: token, connID: connID, service: service, early: early}
	expect, ok := d.expect()
	if !ok {
		return p
	}
	// Stocked while it moves from the pool to held (dispatcher.go, stocked).
	d.lent.Add(1)
	defer d.lent.Add(-1)
	s, err := d.take(ctx, expect, early, false)
	if err != nil {
		return p
	}
	s.at = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		s.c.Close()
		return p
	}
	if d.held == nil {
		d.held = make(map[*Prepared]spare)
	}
	d.held[p] = s
	return p
}

// HandoffPrepared is Handoff for a Prepared.
func (d *Dispatcher) HandoffPrepared(ctx context.Context, client *net.UnixConn, p *Prepared) error {
	defer d.release(p)
	return d.Handoff(ctx, client, p.token, p.connID, p.service, p.early, p)
}

// claim returns the spare held for p, if it is still held.
func (d *Dispatcher) claim(p *Prepared) (spare, bool) {
	if p == nil {
		return spare{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.held[p]
	delete(d.held, p)
	return s, ok
}

// release puts an unclaimed held spare back into the pool.
func (d *Dispatcher) release(p *Prepared) {
	if s, ok := d.claim(p); ok {
		d.put(s)
	}
}

// reclaim puts spares held too long back into the pool (Run's pass). d.mu is held.
func (d *Dispatcher) reclaimLocked(now time.Time) {
	for p, s := range d.held {
		if now.Sub(s.at) > heldMax {
			delete(d.held, p)
			if len(d.pool) < d.o.Spares {
				d.pool = append(d.pool, s)
			} else {
				s.c.Close()
			}
		}
	}
}
