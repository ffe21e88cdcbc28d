package registry

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Target names the backends of one service version in one instance, live or not: what a
// spawn, a probe or an exit is about before (or after) any process is in the table.
type Target struct {
	Instance string
	Service  string
	Version  string
}

// Fault is the last problem seen for a Target: a failed probe of a registered backend,
// a failed spawn or the exit status of a launched one.
type Fault struct {
	Target
	Err string
	At  time.Time
}

// maxFaults bounds the table: targets come from Hellos (a launched service's versions),
// so a flood of versions must not grow it without end. The oldest fault goes first.
const maxFaults = 256

type faults struct {
	mu sync.Mutex
	m  map[Target]Fault
}

// NoteError records err as the last problem of t. An empty err is ignored.
func (r *Registry) NoteError(t Target, err string, at time.Time) {
	if err == "" {
		return
	}
	f := &r.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[t]; !ok && len(f.m) >= maxFaults {
		var oldest Target
		first := true
		for k, v := range f.m {
			if first || v.At.Before(f.m[oldest].At) {
				oldest, first = k, false
			}
		}
		delete(f.m, oldest)
	}
	f.m[t] = Fault{Target: t, Err: err, At: at}
}

// Faults returns the last problem of every target that had one, sorted by instance,
// service and version.
func (r *Registry) Faults() []Fault {
	f := &r.faults
	f.mu.Lock()
	out := make([]Fault, 0, len(f.m))
	for _, v := range f.m {
		out = append(out, v)
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Fault) int {
		return strings.Compare(a.Instance+"\x00"+a.Service+"\x00"+a.Version, b.Instance+"\x00"+b.Service+"\x00"+b.Version)
	})
	return out
}

// TargetOf is the target a backend entry belongs to.
func TargetOf(k Key) Target {
	return Target{Instance: k.Instance, Service: k.Service, Version: k.Version}
}
