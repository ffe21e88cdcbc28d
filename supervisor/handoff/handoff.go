// Package handoff passes a negotiated client connection from the broker to its backend
// (docs/protocol.md, "Handoff"): one sendmsg with the 16 token bytes and the client fd as
// SCM_RIGHTS on a handoff connection, the 0xD0FF offer, the backend's ack, then the
// handoff-ready EVENT relayed to the client.
//
// Speed comes from keeping dials off the critical path: a Dispatcher keeps a few verified
// spare connections to the backend's handoff endpoint, dialled ahead of demand by its own
// Run goroutine (pool.go). Each spare's life is an explicit state machine (spare.go). v1
// backends expect one exchange per connection, so each spare serves one handoff and is
// closed. Run probes each fresh spare (probe.go), so that a backend with our extensions
// (docs/protocol.md, "Extensions (ours)") is proven before any client arrives; what it
// proved decides what a client is granted (grant.go).
package handoff

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
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

// Options configure a Dispatcher for one backend handoff endpoint. What the exchange
// uses beyond v1 is not configured: it follows what the backend proved (probe.go), so a
// v1 backend gets the plain v1 exchange.
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
	// no ack unless declined.
	Lazy, Quiet, LateFailures uint64
	// Dials counts connections dialled to the endpoint; Probes the capability probes
	// sent on fresh spares (probe.go).
	Dials, Probes uint64
	// Bugs counts illegal spare state changes refused (spare.go); always 0 unless the
	// dispatcher has a bug.
	Bugs   uint64
	Spares int
	Held   int // spares taken by Prepare, not yet handed off
	Tokens int
}

// Dispatcher hands clients off to one backend endpoint. Run owns the spare pool; Issue
// and Handoff are safe from any goroutine.
type Dispatcher struct {
	o    Options
	euid uint32
	tok  *tokens
	kick chan struct{}

	inflight atomic.Int64
	handoffs atomic.Uint64
	failures atomic.Uint64
	early    atomic.Uint64
	lazy     atomic.Uint64
	quiet    atomic.Uint64
	// lateFailures counts lazy handoffs found failed when their ack was read.
	lateFailures atomic.Uint64
	dials        atomic.Uint64
	probes       atomic.Uint64
	bugs         atomic.Uint64

	mu   sync.Mutex
	pool []*spare             // idle and owing spares, newest last
	held map[*Prepared]*spare // taken ahead of Negotiated (prepare.go)
	// stocked counts the spares that count towards Options.Spares (spare.go, stockedIn);
	// only moveLocked changes it.
	stocked int
	v1pids  map[int]time.Time // backends that answered a probe as v1, and when (probe.go)
	closed  bool
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
		Lazy: d.lazy.Load(), Quiet: d.quiet.Load(), LateFailures: d.lateFailures.Load(), Dials: d.dials.Load(),
		Probes: d.probes.Load(), Bugs: d.bugs.Load(), Spares: n, Held: held, Tokens: d.tok.outstanding()}
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
