package servicedef

import (
	"slices"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Lookup is what a snapshot knows about one service.
//
// Def != nil: serve with it (it may be the last good definition of a file that is currently
// broken; Stale then says why). Def == nil and Err != nil: the definition could not be
// loaded (bad file or untrusted directory). Neither: no such service.
type Lookup struct {
	Def   *wirepb.ServiceDefinition // shared and immutable: never modify it
	Err   error                     // why there is no usable definition
	Found bool                      // a file for this service is in the directory
	Stale error                     // the current file's failure while Def is the last good one
}

// entry is the immutable state of one file. A new entry replaces it on every change, so a
// snapshot can share entries with its predecessor.
type entry struct {
	path string
	def  *wirepb.ServiceDefinition // last good definition, nil if the file never loaded
	err  error                     // latest load failure, nil when the file loads
}

// Snapshot is an immutable view of the directory at one moment; reading it takes no lock
// and touches no disk.
type Snapshot struct {
	dir     string
	dirErr  error // the directory itself is unusable: nothing is served from it
	entries map[string]*entry
}

// Lookup returns what is known about service.
func (s *Snapshot) Lookup(service string) Lookup {
	if s.dirErr != nil {
		return Lookup{Err: s.dirErr}
	}
	e, ok := s.entries[service]
	if !ok {
		return Lookup{}
	}
	if e.def == nil {
		return Lookup{Err: e.err, Found: true}
	}
	return Lookup{Def: e.def, Found: true, Stale: e.err}
}

// ServiceNames lists, sorted, every service that has a file in the directory, usable or not.
func (s *Snapshot) ServiceNames() []string {
	out := make([]string, 0, len(s.entries))
	for name := range s.entries {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Dir is the directory the snapshot was taken of.
func (s *Snapshot) Dir() string { return s.dir }

// DirErr says why the directory is unusable, or nil.
func (s *Snapshot) DirErr() error { return s.dirErr }
