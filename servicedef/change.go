package servicedef

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

// ChangeKind says what happened to a service's definition.
type ChangeKind int

const (
	// Loaded: the service now has a good definition where it had none (new file, first good
	// load, or the same definition loading again after a failure).
	Loaded ChangeKind = iota + 1
	// Changed: a good definition was replaced by a different good one.
	Changed
	// Removed: the file is gone; the service is unknown from now on.
	Removed
	// Rejected: the file (or the directory) failed to load. Def is the last good definition
	// still in effect, or nil when there is none.
	Rejected
	// Resync: the subscriber's buffer was full and changes were dropped; re-read the
	// Loader's snapshot for the current state. Service is empty.
	Resync
)

func (k ChangeKind) String() string {
	switch k {
	case Loaded:
		return "loaded"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	case Rejected:
		return "rejected"
	case Resync:
		return "resync"
	}
	return "unknown"
}

// Change is one event for subscribers. Def is the definition in effect after the change
// (nil when there is none). The snapshot is published before subscribers are told, so a
// Lookup after receiving a Change sees it or something newer.
type Change struct {
	Service string
	Kind    ChangeKind
	Def     *wirepb.ServiceDefinition
	Err     error
}

// diff lists what changed between two snapshots, ordered by service. Entries are shared
// between snapshots, so pointer equality means "untouched".
func diff(old, next *Snapshot) []Change {
	var out []Change
	for svc, ne := range next.entries {
		oe := old.entries[svc]
		if oe == ne {
			continue
		}
		switch {
		case ne.err != nil:
			out = append(out, Change{Service: svc, Kind: Rejected, Def: ne.def, Err: ne.err})
		case oe == nil || oe.def == nil || proto.Equal(oe.def, ne.def):
			out = append(out, Change{Service: svc, Kind: Loaded, Def: ne.def})
		default:
			out = append(out, Change{Service: svc, Kind: Changed, Def: ne.def})
		}
	}
	for svc := range old.entries {
		if _, ok := next.entries[svc]; ok {
			continue
		}
		if next.dirErr != nil {
			out = append(out, Change{Service: svc, Kind: Rejected, Err: next.dirErr})
		} else {
			out = append(out, Change{Service: svc, Kind: Removed})
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Service, b.Service) })
	return out
}
