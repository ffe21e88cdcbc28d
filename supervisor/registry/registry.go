// Package registry is the table of live backends, keyed by instance, service, version and
// executable hash. Dead backends are pruned before every lookup.
package registry

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Key identifies a backend. A backend registered in one instance is invisible to another.
type Key struct {
	Instance string
	Service  string
	Version  string
	ExeHash  [32]byte
}

// Backend is one live backend process and where clients reach it.
type Backend struct {
	Key     Key
	Pipe    string
	PID     int
	Started time.Time
	// Mode is "registered" or "launch", for status output.
	Mode string

	proc      *Proc
	lastHello atomic.Int64 // unix ms
}

// NewBackend builds an entry watched through proc (may be nil: liveness then unknown,
// treated as alive).
func NewBackend(key Key, pipe string, proc *Proc, mode string) *Backend {
	b := &Backend{Key: key, Pipe: pipe, proc: proc, Mode: mode, Started: time.Now()}
	if proc != nil {
		b.PID = proc.PID()
	}
	return b
}

// Alive reports whether the backend process still runs.
func (b *Backend) Alive() bool { return b.proc == nil || !b.proc.Exited() }

// Proc is the process watch, or nil.
func (b *Backend) Proc() *Proc { return b.proc }

// Touch records a Hello routed to the backend.
func (b *Backend) Touch(now time.Time) { b.lastHello.Store(now.UnixMilli()) }

// LastHello is the time of the last routed Hello (zero if none).
func (b *Backend) LastHello() time.Time {
	ms := b.lastHello.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Registry is safe for concurrent use; the lock is held only for map operations.
type Registry struct {
	mu sync.RWMutex
	m  map[Key]*Backend

	faults faults
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{m: make(map[Key]*Backend), faults: faults{m: map[Target]Fault{}}}
}

// Add registers b, replacing any entry with the same key.
func (r *Registry) Add(b *Backend) {
	r.mu.Lock()
	r.m[b.Key] = b
	r.mu.Unlock()
}

// Remove drops b if it is still the entry for its key; it reports whether it did.
func (r *Registry) Remove(b *Backend) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[b.Key] == b {
		delete(r.m, b.Key)
		return true
	}
	return false
}

// Lookup returns a live backend for (instance, service, version), any executable hash,
// after pruning dead entries for that service. The result prefers the newest start.
func (r *Registry) Lookup(instance, service, version string) *Backend {
	r.mu.RLock()
	var found []*Backend
	for k, b := range r.m {
		if k.Instance == instance && k.Service == service && k.Version == version {
			found = append(found, b)
		}
	}
	r.mu.RUnlock()
	var best *Backend
	for _, b := range found {
		if !b.Alive() {
			r.Remove(b)
			continue
		}
		if best == nil || b.Started.After(best.Started) {
			best = b
		}
	}
	return best
}

// List returns every entry, sorted by service, version and start time.
func (r *Registry) List() []*Backend {
	r.mu.RLock()
	out := make([]*Backend, 0, len(r.m))
	for _, b := range r.m {
		out = append(out, b)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Backend) int {
		if c := strings.Compare(a.Key.Service, b.Key.Service); c != 0 {
			return c
		}
		if c := strings.Compare(a.Key.Version, b.Key.Version); c != 0 {
			return c
		}
		return a.Started.Compare(b.Started)
	})
	return out
}
