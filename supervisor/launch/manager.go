// Package launcher starts launch-mode backends on a Hello miss, waits until they answer
// the identity probe, and supervises them: every child is reaped, idle ones are stopped,
// and all of them stop with the broker.
package launch

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Defaults for zero Options and Settings fields.
const (
	DefaultGrace        = 5 * time.Second
	DefaultStartTimeout = 10 * time.Second
)

// Options configure a Manager.
type Options struct {
	Registry *registry.Registry
	Hasher   *identity.Hasher
	// Layout names backend sockets: <Dir>/rpb-v1-{SID}-be-{32 hex}.sock.
	Layout names.Layout
	Log    zerolog.Logger
	// Grace is the time between SIGTERM and SIGKILL when a child is stopped.
	Grace time.Duration
	// Events, when set, receives lifecycle events. It is called from many goroutines
	// and must not block.
	Events func(Event)
	// OnSpawn, when set, learns the outcome of every spawn attempt (metrics). It is
	// called from Manager goroutines and must not block.
	OnSpawn func(key registry.Key, err error)
	// Now is the clock of the spawn budgets (tests inject one); nil means time.Now.
	Now func() time.Time
	// Environ is the user baseline environment of children; nil means os.Environ().
	Environ []string
	// Adopt, when set, lists the children of the image before an upgrade: Run adopts them
	// before it routes any Hello.
	Adopt *Adoption
	// Thread, when set, is the OS thread every child is started from, served by its owner
	// for longer than any child lives: the broker passes its main thread, the one an
	// upgrade execs from (see starter.go). Nil: the Manager locks a thread of its own.
	Thread *osthread.Thread
}

// Event is one lifecycle event of a launched backend.
type Event struct {
	Kind     wirepb.EventKind // SPAWN_ATTEMPT, SPAWN, DIED_CRASH, DIED_IDLE or DIED_SHUTDOWN
	Time     time.Time
	PID      int
	Instance string
	Service  string
	Version  string
	Status   string // exit status of a DIED_* event, e.g. "exit status 3" or "signal: killed"
	Reason   string
}

// Manager launches and supervises backends. Run must be running for Route to spawn.
type Manager struct {
	o      Options
	thread *osthread.Thread // the starter thread: Options.Thread or the Manager's own

	running chan struct{} // closed when Run starts
	stopped chan struct{} // closed when Run has stopped every child

	mu       sync.Mutex
	runCtx   context.Context
	closing  bool                    // set on the starter thread: no more starts
	children map[*child]struct{}     // every started, unreaped child
	ready    map[registry.Key]*child // verified children, the warm path
	slots    map[registry.Key]*slot  // spawn budgets and flights

	wg sync.WaitGroup // reapers, output readers, idle watchers, stoppers
	// outRate bounds the backend output lines logged per second, over all children.
	outRate *lineRate
}

// New returns a Manager; nothing runs until Run.
func New(o Options) *Manager {
	if o.Registry == nil {
		o.Registry = registry.New()
	}
	if o.Hasher == nil {
		o.Hasher = &identity.Hasher{}
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	thread := o.Thread
	if thread == nil {
		thread = osthread.New()
	}
	return &Manager{
		o:        o,
		thread:   thread,
		running:  make(chan struct{}),
		stopped:  make(chan struct{}),
		children: make(map[*child]struct{}),
		ready:    make(map[registry.Key]*child),
		slots:    make(map[registry.Key]*slot),
		outRate:  newLineRate(outputLinesPerSec, outputBurst, time.Now),
	}
}

// errRunTwice is returned by a second Run.
var errRunTwice = errors.New("launcher: Run called twice")

// Run owns the starter thread and every child. When ctx ends it stops all children
// (SIGTERM to each process group, Grace, SIGKILL), waits for every goroutine and returns.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.runCtx != nil {
		m.mu.Unlock()
		return errRunTwice
	}
	m.runCtx = ctx
	m.mu.Unlock()
	m.reclaimStale() // before running closes: no spawn has bound a socket yet

	threadStop := make(chan struct{})
	threadDone := make(chan struct{})
	go func() {
		defer close(threadDone)
		if m.o.Thread == nil {
			m.thread.Serve(threadStop)
		}
	}()
	if m.o.Adopt != nil {
		m.adoptAll(m.o.Adopt)
	}
	close(m.running)

	<-ctx.Done()
	// The starter serialises starts, so once it has set closing no child can appear
	// behind the snapshot below.
	m.thread.Do(func() { m.handleStart(&startReq{shutdown: true}) })
	m.mu.Lock()
	all := make([]*child, 0, len(m.children))
	for c := range m.children {
		all = append(all, c)
	}
	m.mu.Unlock()
	for _, c := range all {
		m.wg.Go(func() { m.stop(c, stopShutdown) })
	}
	for _, c := range all {
		<-c.exited
	}
	// Only now may the starter thread exit (when it is ours): its exit fires every
	// child's Pdeathsig.
	close(threadStop)
	<-threadDone
	close(m.stopped)
	m.wg.Wait()
	return nil
}

// Started is closed once Run routes Hellos: after any adoption (Options.Adopt) is done.
func (m *Manager) Started() <-chan struct{} { return m.running }

func (m *Manager) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if m.o.Events != nil {
		m.o.Events(e)
	}
}

// BackendInfo describes one launched child for status output.
type BackendInfo struct {
	PID       int       `json:"pid"`
	Instance  string    `json:"broker_instance"`
	Service   string    `json:"service_name"`
	Version   string    `json:"service_version"`
	Endpoint  string    `json:"backend_pipe"`
	State     string    `json:"state"` // starting, running or stopping
	Started   time.Time `json:"started"`
	LastHello time.Time `json:"last_hello"`
}

// Backends lists every launched child that has not been reaped yet.
func (m *Manager) Backends() []BackendInfo {
	m.mu.Lock()
	all := make([]*child, 0, len(m.children))
	for c := range m.children {
		all = append(all, c)
	}
	m.mu.Unlock()
	// info takes c.mu, which is taken before m.mu elsewhere: never under m.mu.
	out := make([]BackendInfo, 0, len(all))
	for _, c := range all {
		if c.reason.Load() == stopUnreachable {
			continue // withdrawn: it is only being stopped
		}
		out = append(out, c.info())
	}
	sortInfos(out)
	return out
}
