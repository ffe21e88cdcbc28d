package launch

import (
	"slices"
	"strings"
	"time"

	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Spawn budget per key: attempts per fixed window. A start that became ready stays
// counted until the window ends, so a backend that exits on its own soon after it became
// ready is a failed start; one the broker stopped itself (idle, unreachable) resets the
// budget, as a success always did.
const (
	budgetAttempts = 3
	budgetWindow   = 30 * time.Second
	// maxSlots triggers a sweep of idle slots: wanted_version is client-chosen, so keys
	// must not accumulate without bound.
	maxSlots = 1024
)

// slot is the spawn state of one key: its budget window and the spawn in flight.
type slot struct {
	window   time.Time // start of the current window
	attempts int
	flight   *flight
	// exhaustedLogged: the spent budget of this window has been logged; the Hellos it
	// refuses are not, one by one.
	exhaustedLogged bool
}

// flight is one spawn; waiters read route and err after done closes.
type flight struct {
	done  chan struct{}
	route serve.Route
	err   error
}

// claim joins the spawn in flight for key, or, within budget, starts spawn on a
// Manager-owned goroutine, telling it which attempt of the window it is (above 1: the
// previous start failed or crashed). A nil flight without error means a backend for key
// became ready: route to it.
func (m *Manager) claim(key registry.Key, spawn func(attempt int) (serve.Route, error)) (*flight, error) {
	now := m.o.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.runCtx == nil || m.closing {
		// Not started yet, or shutting down: nothing may be added to wg.
		return nil, errClosing
	}
	s := m.slots[key]
	if s == nil {
		if len(m.slots) >= maxSlots {
			m.sweepLocked(now)
		}
		s = &slot{}
		m.slots[key] = s
	}
	if s.flight != nil {
		return s.flight, nil
	}
	if c := m.ready[key]; c != nil && c.lastUsed.Load() >= 0 {
		return nil, nil
	}
	if s.attempts > 0 && now.Sub(s.window) >= budgetWindow {
		s.attempts, s.exhaustedLogged = 0, false
	}
	if s.attempts >= budgetAttempts {
		retry := s.window.Add(budgetWindow).Sub(now)
		if !s.exhaustedLogged {
			s.exhaustedLogged = true
			m.o.Log.Warn().Str("event", "spawn_budget_exhausted").Str("service", key.Service).Str("version", key.Version).
				Int("attempts", s.attempts).Str("window", logfield.Dur(budgetWindow)).Str("retry_in", logfield.Dur(retry)).
				Msg("spawn budget exhausted; Hellos are refused RATE_LIMITED until the window ends")
		}
		ms := max(uint64((retry+time.Millisecond-1)/time.Millisecond), 1)
		return nil, wire.Refuse(wirepb.ErrorCode_ERROR_RATE_LIMITED, wire.ReasonSpawnBudget, ms)
	}
	if s.attempts == 0 {
		s.window = now
	}
	s.attempts++
	attempt := s.attempts
	f := &flight{done: make(chan struct{})}
	s.flight = f
	// Under m.mu with closing unset: Run has not reached wg.Wait.
	m.wg.Go(func() {
		rt, err := spawn(attempt)
		m.land(key, f, rt, err)
	})
	return f, nil
}

// land publishes the result of the spawn f to its waiters. The attempt stays counted
// either way: a backend that crashes right after it became ready must not earn a fresh
// budget by answering one probe.
func (m *Manager) land(key registry.Key, f *flight, rt serve.Route, err error) {
	m.mu.Lock()
	if s := m.slots[key]; s != nil {
		s.flight = nil
	}
	f.route, f.err = rt, err
	m.mu.Unlock()
	close(f.done)
}

// forgive resets the budget of key: its last start ended in a stop the broker chose.
func (m *Manager) forgive(key registry.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slots[key]; s != nil && s.flight == nil {
		delete(m.slots, key)
	}
}

// sweepLocked drops slots with nothing in flight and an expired window.
func (m *Manager) sweepLocked(now time.Time) {
	for k, s := range m.slots {
		if s.flight == nil && now.Sub(s.window) >= budgetWindow {
			delete(m.slots, k)
		}
	}
}

// BudgetInfo is one key's spawn budget, for the admin DUMP verb.
type BudgetInfo struct {
	BrokerInstance string `json:"broker_instance"`
	ServiceName    string `json:"service_name"`
	ServiceVersion string `json:"service_version"`
	AttemptsUsed   int    `json:"attempts_used"`
	Remaining      int    `json:"remaining"`
	InFlight       bool   `json:"in_flight"`
	RetryAfterMS   uint64 `json:"retry_after_ms"`
}

// Budgets lists the keys with spawn attempts in the current window or a spawn in
// flight; a key absent here has its full budget.
func (m *Manager) Budgets() []BudgetInfo {
	now := m.o.Now()
	m.mu.Lock()
	out := make([]BudgetInfo, 0, len(m.slots))
	for k, s := range m.slots {
		used := s.attempts
		if now.Sub(s.window) >= budgetWindow {
			used = 0
		}
		if used == 0 && s.flight == nil {
			continue
		}
		b := BudgetInfo{BrokerInstance: k.Instance, ServiceName: k.Service, ServiceVersion: k.Version,
			AttemptsUsed: used, Remaining: budgetAttempts - used, InFlight: s.flight != nil}
		if used >= budgetAttempts {
			b.RetryAfterMS = max(uint64(s.window.Add(budgetWindow).Sub(now).Milliseconds()), 1)
		}
		out = append(out, b)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b BudgetInfo) int {
		return strings.Compare(a.BrokerInstance+"\x00"+a.ServiceName+"\x00"+a.ServiceVersion,
			b.BrokerInstance+"\x00"+b.ServiceName+"\x00"+b.ServiceVersion)
	})
	return out
}
