// Package serve runs one control socket: accept, verify the peer, read one frame, and
// answer it with the v1 dispatch order (admin, or a Hello routed to a backend).
package serve

import (
	"sync/atomic"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Shared is the state every loop of one broker shares: connection ids, the Hello rate
// limiter, drain and fd-pressure flags, and counters the admin verbs report.
type Shared struct {
	Observer Observer
	FD       *FDPressure

	limiter  atomic.Pointer[RateLimiter]
	connIDs  atomic.Uint64
	draining atomic.Bool
	open     atomic.Int64
	inflight atomic.Int64
	started  time.Time
}

// NewShared returns the shared state; limiter may be nil (no limit), observer nil (none).
func NewShared(limiter *RateLimiter, obs Observer) *Shared {
	if obs == nil {
		obs = nopObserver{}
	}
	s := &Shared{Observer: obs, FD: NewFDPressure(), started: time.Now()}
	s.limiter.Store(limiter)
	return s
}

// SetLimiter replaces the Hello rate limiter (hello_rate_limit changed on reload).
func (s *Shared) SetLimiter(l *RateLimiter) { s.limiter.Store(l) }

// NextConnectionID returns a broker-wide unique, increasing connection id (v1 sends 1).
func (s *Shared) NextConnectionID() uint64 { return s.connIDs.Add(1) }

// Drain makes every loop refuse new Hellos with SHUTTING_DOWN; admin keeps working.
func (s *Shared) Drain() { s.draining.Store(true) }

// Draining reports whether the broker is shutting down.
func (s *Shared) Draining() bool { return s.draining.Load() }

// ConnectionsOpen counts control connections open right now across all loops.
func (s *Shared) ConnectionsOpen() int64 { return s.open.Load() }

// HellosInFlight counts Hellos being routed right now across all loops.
func (s *Shared) HellosInFlight() int64 { return s.inflight.Load() }

// Started is when the shared state was created (broker start).
func (s *Shared) Started() time.Time { return s.started }

// Observer receives the outcome of every Hello, for metrics and lifecycle events.
type Observer interface {
	HelloDone(o HelloOutcome)
}

// HelloOutcome describes one answered Hello.
type HelloOutcome struct {
	Service      string
	Version      string
	ConnectionID uint64
	RequestID    string
	Code         wirepb.ErrorCode // ERROR_CODE_UNSPECIFIED when negotiated
	Reason       string
	Duration     time.Duration
}

type nopObserver struct{}

func (nopObserver) HelloDone(HelloOutcome) {}
