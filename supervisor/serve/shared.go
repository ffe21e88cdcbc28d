// Package serve runs one control socket: accept, verify the peer, read one frame, and
// answer it with the v1 dispatch order (admin, or a Hello routed to a backend).
package serve

import (
	"context"
	"sync"
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

	// idle is closed when inflight drops to zero while WaitHellosIdle waits; a Hello
	// takes idleMu only then (waiters > 0), so serving pays nothing outside a drain.
	idleMu  sync.Mutex
	idle    chan struct{}
	waiters atomic.Int32
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

func (s *Shared) helloBegin() { s.inflight.Add(1) }

func (s *Shared) helloEnd() {
	if s.inflight.Add(-1) == 0 && s.waiters.Load() > 0 {
		s.idleMu.Lock()
		if s.idle != nil {
			close(s.idle)
			s.idle = nil
		}
		s.idleMu.Unlock()
	}
}

// WaitHellosIdle blocks until no Hello is being routed, or ctx ends (its error then).
func (s *Shared) WaitHellosIdle(ctx context.Context) error {
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	for {
		s.idleMu.Lock()
		if s.inflight.Load() == 0 {
			s.idleMu.Unlock()
			return nil
		}
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle := s.idle
		s.idleMu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Started is when the shared state was created (broker start).
func (s *Shared) Started() time.Time { return s.started }

// Observer receives the outcome of every Hello, for metrics and lifecycle events, and
// every panic a loop recovered.
type Observer interface {
	HelloDone(o HelloOutcome)
	// PanicRecovered is called once per panic recovered at a serving boundary, after it
	// was logged with its stack; where is "connection", "admin" or "route".
	PanicRecovered(where string)
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
	// Framing is set for a refusal decided before any Hello field was read: a framing or
	// size failure, a malformed Frame, a foreign peer, the connection cap.
	Framing bool
}

type nopObserver struct{}

func (nopObserver) HelloDone(HelloOutcome) {}
func (nopObserver) PanicRecovered(string)  {}
