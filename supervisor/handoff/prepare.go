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
	r Request
}

// Prepare readies the handoff for r, without dialling. Call HandoffPrepared with the
// result; a Prepared that is never handed off costs nothing but a spare held for
// heldMax.
func (d *Dispatcher) Prepare(ctx context.Context, r Request) *Prepared {
	p := &Prepared{r: r}
	expect, ok := d.expect()
	if !ok {
		return p
	}
	s, err := d.take(ctx, want{expect: expect, early: r.Early, to: held})
	if err != nil {
		return p
	}
	s.at = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.moveLocked(s, closed)
		return p
	}
	if d.held == nil {
		d.held = make(map[*Prepared]*spare)
	}
	d.held[p] = s
	return p
}

// HandoffPrepared is Handoff for a Prepared.
func (d *Dispatcher) HandoffPrepared(ctx context.Context, client *net.UnixConn, p *Prepared) error {
	defer d.release(p)
	return d.handOff(ctx, &exchange{Request: p.r, client: client, p: p})
}

// claim returns the spare held for p, lent to its handoff, or nil when none is held.
func (d *Dispatcher) claim(p *Prepared) *spare {
	if p == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.held[p]
	if !ok {
		return nil
	}
	delete(d.held, p)
	if d.moveLocked(s, lent) != nil {
		return nil
	}
	return s
}

// release puts an unclaimed held spare back into the pool.
func (d *Dispatcher) release(p *Prepared) {
	d.mu.Lock()
	s, ok := d.held[p]
	delete(d.held, p)
	d.mu.Unlock()
	if ok {
		d.put(s)
	}
}

// reclaimLocked puts spares held too long back into the pool (Run's pass). d.mu is held.
func (d *Dispatcher) reclaimLocked(now time.Time) {
	for p, s := range d.held {
		if now.Sub(s.at) > heldMax {
			delete(d.held, p)
			if len(d.pool) < d.o.Spares && d.moveLocked(s, idle) == nil {
				d.pool = append(d.pool, s)
			} else {
				d.moveLocked(s, closed)
			}
		}
	}
}
