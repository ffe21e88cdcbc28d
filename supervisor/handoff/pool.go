package handoff

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/backoff"
	"github.com/rpbroker/broker/wire/identity"
)

// Run keeps the spare pool full until ctx is cancelled, then closes every spare.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.closeAll()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	retry := backoff.New(backoff.Policy{Initial: 20 * time.Millisecond, Max: 2 * time.Second})
	var lastErr string
	for {
		var retryT *time.Timer
		var retryC <-chan time.Time
		if err := d.fill(ctx); err != nil && ctx.Err() == nil {
			if msg := err.Error(); msg != lastErr {
				d.o.Log.Warn().Err(err).Str("endpoint", d.o.Endpoint).Msg("handoff endpoint unavailable; retrying")
				lastErr = msg
			}
			retryT = time.NewTimer(retry.Next())
			retryC = retryT.C
		} else {
			retry.Reset()
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.kick:
		case <-retryC:
		case now := <-tick.C:
			d.tok.sweep(now)
		}
		if retryT != nil {
			retryT.Stop()
		}
	}
}

// fill drops spares that are no longer usable and dials until enough are stocked. A
// refill can land in the instant a spare moves between the pool, Prepare and a handoff
// and dial one too many, which is closed when the spare returns: rare and harmless.
func (d *Dispatcher) fill(ctx context.Context) error {
	d.settlePool()
	expect, ok := d.expect()
	now := time.Now()
	d.mu.Lock()
	d.reclaimLocked(now)
	keep := d.pool[:0]
	for _, s := range d.pool {
		if ok && d.usable(s, expect, now) {
			keep = append(keep, s)
		} else {
			d.moveLocked(s, closed)
		}
	}
	clear(d.pool[len(keep):])
	d.pool = keep
	missing := d.o.Spares - d.stocked
	d.mu.Unlock()
	if !ok {
		return nil // no verified backend: nothing may be dialled
	}
	for range missing {
		s, err := d.dialSpare(ctx, expect)
		if err != nil {
			return err
		}
		if !d.put(s) {
			return nil
		}
	}
	return nil
}

// refillDue reports whether fewer spares are stocked than Options.Spares.
func (d *Dispatcher) refillDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stocked < d.o.Spares
}

// put returns s to the pool, idle or owing its ack; it closes s instead when the
// dispatcher is closed or the pool full.
func (d *Dispatcher) put(s *spare) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.pool) >= d.o.Spares {
		d.moveLocked(s, closed)
		return false
	}
	to := idle
	if s.ack != nil {
		to = owing
	}
	if d.moveLocked(s, to) != nil {
		return false
	}
	d.pool = append(d.pool, s)
	return true
}

func (d *Dispatcher) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.pool {
		d.moveLocked(s, closed)
	}
	for _, s := range d.held {
		d.moveLocked(s, closed)
	}
	d.pool, d.held, d.closed = nil, nil, true
}

// want says which spare take may return and where it goes.
type want struct {
	expect int        // the pid its peer must have, -1 any of our uid
	early  bool       // only a spare proven to relay (the client may have written)
	dial   bool       // dial inline when the pool has none
	to     spareState // lent (a handoff) or held (Prepare)
}

// take returns a usable spare, moved to w.to, dialling inline only when the pool is
// empty. The caller kicks the refill once its handoff is done, so that dialling never
// competes with it. early takes only a spare proven to relay (or none); other handoffs take
// unproven ones first, so that every spare gets proven and early data is rarely refused
// for want of one. A spare whose lazy ack is not there yet is passed over for another
// one, and waited for only when no other is left.
func (d *Dispatcher) take(ctx context.Context, w want) (*spare, error) {
	now := time.Now()
	var waiting []*spare // settling, their acks not there yet
	defer func() {
		for _, s := range waiting {
			d.put(s)
		}
	}()
	for {
		d.mu.Lock()
		s := d.popLocked(w.early)
		if s == nil {
			d.mu.Unlock()
			break
		}
		next := w.to
		if s.ack != nil {
			next = settling
		}
		err := d.moveLocked(s, next)
		d.mu.Unlock()
		if err != nil {
			continue
		}
		if s.ack != nil {
			ready, ok := d.settle(s, false)
			if !ready {
				waiting = append(waiting, s)
			}
			if !ok || d.move(s, w.to) != nil {
				continue
			}
		}
		if d.usable(s, w.expect, now) {
			return s, nil
		}
		d.move(s, closed)
	}
	for len(waiting) > 0 {
		s := waiting[0]
		waiting = waiting[1:]
		if _, ok := d.settle(s, true); ok {
			if d.move(s, w.to) == nil && d.usable(s, w.expect, now) {
				return s, nil
			}
			d.move(s, closed)
		}
	}
	if w.early {
		return nil, ErrNoRelaySpare // a fresh dial has proven nothing
	}
	if !w.dial {
		return nil, errNoSpare
	}
	s, err := d.dial(ctx, w.expect)
	if err != nil {
		return nil, err
	}
	if err := d.move(s, w.to); err != nil {
		return nil, err
	}
	return s, nil
}

// popLocked removes from the pool the spare take should try next, nil for none: newest
// first (least likely to have gone stale); for early only proven relays, otherwise
// unproven spares before proven ones. d.mu is held.
func (d *Dispatcher) popLocked(early bool) *spare {
	i := -1
	for j := len(d.pool) - 1; j >= 0; j-- {
		if d.pool[j].ext.Relayed == early {
			i = j
			break
		}
	}
	if i < 0 && !early {
		i = len(d.pool) - 1
	}
	if i < 0 {
		return nil
	}
	s := d.pool[i]
	d.pool = slices.Delete(d.pool, i, i+1)
	return s
}

// usable: still the verified backend, not too old, and the peer has neither closed nor
// written anything (a spare never carries data before the offer).
func (d *Dispatcher) usable(s *spare, expect int, now time.Time) bool {
	if (expect >= 0 && s.pid != expect) || now.Sub(s.at) > d.o.MaxIdle {
		return false
	}
	if s.ack != nil || s.checked {
		return true // quiet but for its ack, which settle reads (or just read)
	}
	return silent(s.c)
}

// silent reports whether nothing can be read from c, not even EOF, without reading.
func silent(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(p, 0)
		quiet = err == nil && n == 0
	})
	return quiet
}

// dial connects to the handoff endpoint and verifies the listening process: our uid and,
// when known, the verified backend's pid. An unverified peer is closed before anything
// is written to it. The spare returned is dialling, for the caller to move on.
func (d *Dispatcher) dial(ctx context.Context, expect int) (*spare, error) {
	dctx, cancel := context.WithTimeout(ctx, d.o.DialTimeout)
	defer cancel()
	d.dials.Add(1)
	s := &spare{state: dialling}
	fail := func(err error) (*spare, error) {
		d.move(s, closed)
		return nil, fmt.Errorf("handoff endpoint %s: %w", d.o.Endpoint, err)
	}
	var nd net.Dialer
	c, err := nd.DialContext(dctx, "unix", d.o.Endpoint)
	if err != nil {
		return fail(err)
	}
	s.c = c.(*net.UnixConn)
	cred, err := identity.PeerCred(s.c)
	if err != nil {
		return fail(fmt.Errorf("peer credentials: %w", err))
	}
	if cred.Uid != d.euid {
		return fail(fmt.Errorf("listener uid %d, want %d: %w", cred.Uid, d.euid, ErrPeerUnverified))
	}
	if expect >= 0 && int(cred.Pid) != expect {
		return fail(fmt.Errorf("listener pid %d, verified backend pid %d: %w", cred.Pid, expect, ErrPeerUnverified))
	}
	s.pid, s.at = int(cred.Pid), time.Now()
	return s, nil
}
