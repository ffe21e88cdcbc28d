// Package handoff passes a negotiated client connection from the broker to its backend
// (docs/protocol.md, "Handoff"): one sendmsg with the 16 token bytes and the client fd as
// SCM_RIGHTS on a handoff connection, the 0xD0FF offer, the backend's ack, then the
// handoff-ready EVENT relayed to the client.
//
// Speed comes from keeping dials off the critical path: a Dispatcher keeps a few verified
// spare connections to the backend's handoff endpoint, dialled ahead of demand by its own
// Run goroutine. v1 backends expect one exchange per connection, so each spare serves one
// handoff and is closed. Run probes each fresh spare (probe.go), so that a backend with
// our extensions is proven before any client arrives.
package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
)

// Defaults for Options.
const (
	DefaultSpares      = 4
	DefaultTokenTTL    = 10 * time.Second
	DefaultAckTimeout  = 5 * time.Second // v1
	DefaultDialTimeout = 500 * time.Millisecond
	DefaultMaxIdle     = 30 * time.Second
	DefaultMaxInflight = 64
	DefaultReprobe     = time.Minute
)

// Typed handoff failures, matchable with errors.Is. Every one of them is silent for the
// client: its connection is closed and it reconnects through backend_pipe.
var (
	ErrToken          = errors.New("handoff token is unknown, already used or expired")
	ErrNoBackend      = errors.New("no verified backend to hand off to")
	ErrPeerUnverified = errors.New("handoff endpoint peer is not the verified backend")
	ErrBusy           = errors.New("too many handoffs in flight")
	ErrNoRelaySpare   = errors.New("early data granted but no spare proven to relay is left")
	errNoSpare        = errors.New("no spare ready")
)

// Options configure a Dispatcher for one backend handoff endpoint.
type Options struct {
	Endpoint string
	// ExpectPID returns the pid of the currently verified backend, 0 while none is
	// verified (then no fd is ever sent). nil checks only the uid; use it only where the
	// backend's pid cannot be known.
	ExpectPID func() int
	// Spares is how many verified connections are kept dialled ahead of demand.
	Spares int
	// TokenTTL is how long an issued token stays valid; AckTimeout bounds the wait for the
	// backend's ack; DialTimeout bounds one dial; MaxIdle retires old spares.
	TokenTTL, AckTimeout, DialTimeout, MaxIdle time.Duration
	// MaxInflight caps concurrent handoffs. Each one holds a broker connection slot until
	// the ack arrives (AckTimeout at worst); past the cap, handoffs fall back at once.
	MaxInflight int
	// V1Only sends plain v1 offers, without our extensions (ext.go): no relay by the
	// backend, one exchange per connection. Extensions are harmless to v1 backends, which
	// skip unknown fields; this is for measuring and for peers that are strict.
	V1Only bool
	// SyncAcks waits for every ack, also on spares proven to relay and reuse, where the
	// broker otherwise reads the ack later (lazy.go).
	SyncAcks bool
	// Reprobe is how long a backend that answered a capability probe as v1 goes without
	// another probe (probe.go): a probe that merely timed out on a busy backend costs
	// its clients our extensions for that long, not until it restarts.
	Reprobe time.Duration
	Log     zerolog.Logger
}

// Stats count what a Dispatcher did, for tests and status output.
type Stats struct {
	Handoffs, Failures uint64
	Early              uint64 // handoffs whose client was granted early data
	// Lazy counts handoffs sent without waiting for the ack, counted in Handoffs when
	// sent; LateFailures those of them found declined or unanswered later, which then
	// move from Handoffs to Failures. Quiet counts the lazy ones whose offer asked for
	// no ack unless declined (ext.go).
	Lazy, Quiet, LateFailures uint64
	// Dials counts connections dialled to the endpoint; Probes the capability probes
	// sent on fresh spares (probe.go).
	Dials, Probes uint64
	Spares        int
	Held          int // spares taken by Prepare, not yet handed off
	Tokens        int
}

// Dispatcher hands clients off to one backend endpoint. Run owns the spare pool; Issue
// and Handoff are safe from any goroutine.
type Dispatcher struct {
	o    Options
	euid uint32
	tok  *tokens
	kick chan struct{}

	inflight atomic.Int64
	lent     atomic.Int64 // reusable spares carrying a handoff now (stocked)
	handoffs atomic.Uint64
	failures atomic.Uint64
	early    atomic.Uint64
	lazy     atomic.Uint64
	quiet    atomic.Uint64
	// lateFailures counts lazy handoffs found failed when their ack was read.
	lateFailures atomic.Uint64
	dials        atomic.Uint64
	probes       atomic.Uint64

	mu   sync.Mutex
	pool []spare
	held map[*Prepared]spare // taken ahead of Negotiated (prepare.go)
	// settling counts spares out of the pool while Run reads their acks (lazy.go).
	settling int
	v1pids   map[int]time.Time // backends that answered a probe as v1, and when (probe.go)
	closed   bool
}

// spare is a verified, unused connection to the handoff endpoint. ext is what the
// backend last acked on it (zero for a fresh dial): Reuse proves an ext-aware reader
// (token and offer may share one sendmsg), Relayed proves it writes the EVENT itself
// (early data may be granted).
type spare struct {
	c   *net.UnixConn
	pid int
	at  time.Time
	ext wire.HandoffExt
	ack *lazyAck // the last exchange, whose ack is still to come (lazy.go); nil when none
	// checked: its ack was just read, or found not sent, and nothing followed, so take
	// need not poll it.
	checked bool
}

// New returns a Dispatcher; call Run to keep spares ready (Handoff works without, dialling
// inline).
func New(o Options) *Dispatcher {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TokenTTL, DefaultTokenTTL)
	def(&o.AckTimeout, DefaultAckTimeout)
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.MaxIdle, DefaultMaxIdle)
	def(&o.Reprobe, DefaultReprobe)
	if o.Spares <= 0 {
		o.Spares = DefaultSpares
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	return &Dispatcher{o: o, euid: uint32(os.Geteuid()), tok: newTokens(o.TokenTTL), kick: make(chan struct{}, 1)}
}

// Endpoint is the backend handoff endpoint.
func (d *Dispatcher) Endpoint() string { return d.o.Endpoint }

// Issue returns a fresh one-time token, or nil when none can be issued (too many
// outstanding): the client then gets no token and uses backend_pipe.
func (d *Dispatcher) Issue() []byte { return d.tok.issue(time.Now()) }

// EarlyData reports whether a client may be granted early data or write-ahead now
// (CapEarlyData, CapWriteAhead): a spare to the verified backend has proven, by its ack
// or probe answer, that the backend writes the EVENT itself before reading the client.
// Handoff with early set uses only such a spare.
func (d *Dispatcher) EarlyData() bool {
	if d.o.V1Only {
		return false
	}
	expect, ok := d.expect()
	if !ok {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.pool {
		if s.ext.Relayed && (expect < 0 || s.pid == expect) {
			return true
		}
	}
	return false
}

// Kick asks Run to refill the pool now (e.g. a backend was just verified).
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Stats returns counters and the current pool size.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	n, held := len(d.pool), len(d.held)
	d.mu.Unlock()
	return Stats{Handoffs: d.handoffs.Load(), Failures: d.failures.Load(), Early: d.early.Load(),
		Lazy: d.lazy.Load(), Quiet: d.quiet.Load(), LateFailures: d.lateFailures.Load(), Dials: d.dials.Load(), Probes: d.probes.Load(), Spares: n, Held: held, Tokens: d.tok.outstanding()}
}

// Run keeps the spare pool full until ctx is cancelled, then closes every spare.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.closeAll()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var backoff time.Duration
	var lastErr string
	for {
		var retry *time.Timer
		var retryC <-chan time.Time
		if err := d.fill(ctx); err != nil && ctx.Err() == nil {
			if msg := err.Error(); msg != lastErr {
				d.o.Log.Warn().Err(err).Str("endpoint", d.o.Endpoint).Msg("handoff endpoint unavailable; retrying")
				lastErr = msg
			}
			backoff = min(max(2*backoff, 20*time.Millisecond), 2*time.Second)
			retry = time.NewTimer(backoff)
			retryC = retry.C
		} else {
			backoff, lastErr = 0, ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.kick:
		case <-retryC:
		case now := <-tick.C:
			d.tok.sweep(now)
		}
		if retry != nil {
			retry.Stop()
		}
	}
}

// fill drops spares that are no longer usable and dials until the pool is full.
func (d *Dispatcher) fill(ctx context.Context) error {
	d.settlePool()
	expect, ok := d.expect()
	now := time.Now()
	d.mu.Lock()
	d.reclaimLocked(now)
	keep := d.pool[:0]
	var drop []spare
	for _, s := range d.pool {
		if ok && d.usable(s, expect, now) {
			keep = append(keep, s)
		} else {
			drop = append(drop, s)
		}
	}
	clear(d.pool[len(keep):])
	d.pool = keep
	missing := d.o.Spares - d.stockedLocked()
	d.mu.Unlock()
	for _, s := range drop {
		s.c.Close()
	}
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

// stocked counts the spares that are pooled or will be back shortly: held by Prepare,
// being settled by Run, or carrying a handoff on a connection its backend reuses. Below
// Spares, a refill is due. Counting only the pool would dial a spare for each one in use
// and close the surplus when it came back: a dial and a probe per handoff, at worst. A
// refill can still land in the instant a spare moves between the pool, Prepare and a
// handoff and dial one too many, which is closed when the spare returns: rare and
// harmless.
func (d *Dispatcher) stocked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stockedLocked()
}

func (d *Dispatcher) stockedLocked() int {
	return len(d.pool) + len(d.held) + d.settling + int(d.lent.Load())
}

func (d *Dispatcher) put(s spare) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.pool) >= d.o.Spares {
		s.c.Close()
		return false
	}
	d.pool = append(d.pool, s)
	return true
}

func (d *Dispatcher) closeAll() {
	d.mu.Lock()
	pool := d.pool
	for _, s := range d.held {
		pool = append(pool, s)
	}
	d.pool, d.held, d.closed = nil, nil, true
	d.mu.Unlock()
	for _, s := range pool {
		s.c.Close()
	}
}

// expect returns the pid a handoff peer must have (-1: any of our uid) and whether any
// peer may be used at all.
func (d *Dispatcher) expect() (int, bool) {
	if d.o.ExpectPID == nil {
		return -1, true
	}
	pid := d.o.ExpectPID()
	return pid, pid > 0
}

// take returns a usable spare, dialling inline only when the pool is empty. The caller
// kicks the refill once its handoff is done, so that dialling never competes with it.
// early takes only a spare proven to relay (or none); other handoffs take unproven ones
// first, so that every spare gets proven and early data is rarely refused for want of one.
// A spare whose lazy ack is not there yet is passed over for another one, and waited for
// only when no other is left.
func (d *Dispatcher) take(ctx context.Context, expect int, early, dial bool) (spare, error) {
	now := time.Now()
	var waiting []spare
	defer func() {
		for _, w := range waiting {
			d.put(w)
		}
	}()
	for {
		d.mu.Lock()
		i := d.pick(early)
		if i < 0 {
			d.mu.Unlock()
			break
		}
		s := d.pool[i]
		n := len(d.pool)
		d.pool = append(d.pool[:i], d.pool[i+1:]...)
		d.pool[:n][n-1] = spare{}
		d.mu.Unlock()
		if s.ack != nil {
			ready, ok := d.settle(&s, false)
			if !ready {
				waiting = append(waiting, s)
			}
			if !ok {
				continue
			}
		}
		if d.usable(s, expect, now) {
			return s, nil
		}
		s.c.Close()
	}
	for len(waiting) > 0 {
		s := waiting[0]
		waiting = waiting[1:]
		if _, ok := d.settle(&s, true); ok {
			if d.usable(s, expect, now) {
				return s, nil
			}
			s.c.Close()
		}
	}
	if early {
		return spare{}, ErrNoRelaySpare // a fresh dial has proven nothing
	}
	if !dial {
		return spare{}, errNoSpare
	}
	c, pid, err := d.dial(ctx, expect)
	return spare{c: c, pid: pid, at: now}, err
}

// pick returns the index of the spare take should try next, -1 for none: newest first
// (least likely to have gone stale); for early only proven relays, otherwise unproven
// spares before proven ones. d.mu is held.
func (d *Dispatcher) pick(early bool) int {
	for j := len(d.pool) - 1; j >= 0; j-- {
		if d.pool[j].ext.Relayed == early {
			return j
		}
	}
	if early {
		return -1
	}
	return len(d.pool) - 1
}

// usable: still the verified backend, not too old, and the peer has neither closed nor
// written anything (a spare never carries data before the offer).
func (d *Dispatcher) usable(s spare, expect int, now time.Time) bool {
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
// is written to it.
func (d *Dispatcher) dial(ctx context.Context, expect int) (*net.UnixConn, int, error) {
	dctx, cancel := context.WithTimeout(ctx, d.o.DialTimeout)
	defer cancel()
	d.dials.Add(1)
	var nd net.Dialer
	c, err := nd.DialContext(dctx, "unix", d.o.Endpoint)
	if err != nil {
		return nil, 0, fmt.Errorf("handoff endpoint %s: %w", d.o.Endpoint, err)
	}
	uc := c.(*net.UnixConn)
	cred, err := identity.PeerCred(uc)
	if err != nil {
		uc.Close()
		return nil, 0, fmt.Errorf("handoff endpoint %s: peer credentials: %w", d.o.Endpoint, err)
	}
	if cred.Uid != d.euid {
		uc.Close()
		return nil, 0, fmt.Errorf("handoff endpoint %s: listener uid %d, want %d: %w", d.o.Endpoint, cred.Uid, d.euid, ErrPeerUnverified)
	}
	if expect >= 0 && int(cred.Pid) != expect {
		uc.Close()
		return nil, 0, fmt.Errorf("handoff endpoint %s: listener pid %d, verified backend pid %d: %w", d.o.Endpoint, cred.Pid, expect, ErrPeerUnverified)
	}
	return uc, int(cred.Pid), nil
}
