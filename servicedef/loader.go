package servicedef

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rpbroker/broker/internal/backoff"
	"github.com/rs/zerolog"
)

// Option tunes a Loader.
type Option func(*options)

type options struct {
	rescan    time.Duration
	retryMin  time.Duration
	retryMax  time.Duration
	subBuffer int
	onPanic   func(where string, v any)
}

// WithRescanInterval sets the backstop full rescan period (default 30 s).
func WithRescanInterval(d time.Duration) Option { return func(o *options) { o.rescan = d } }

// WithRetryBackoff bounds the backoff between attempts to (re)open an unusable directory
// (default 100 ms doubling to 5 s). Transient failures (out of descriptors or memory) are
// not the directory's fault and retry on their own clock: 50 ms doubling to 400 ms.
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) { o.retryMin, o.retryMax = min, max }
}

// WithSubscriberBuffer sets the channel capacity of each subscriber (default 64).
func WithSubscriberBuffer(n int) Option { return func(o *options) { o.subBuffer = n } }

// Loader keeps the definitions of one directory in memory, current through an fsnotify watch
// of the directory, and publishes them as immutable snapshots.
type Loader struct {
	dir       string
	log       zerolog.Logger
	o         options
	snap      atomic.Pointer[Snapshot]
	ready     chan struct{}
	once      sync.Once
	rescanReq chan struct{} // Rescan asks the Run loop for a full rescan
	run       atomic.Bool

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

// NewLoader returns a Loader for dir. Nothing happens until Run.
func NewLoader(dir string, log zerolog.Logger, opts ...Option) *Loader {
	o := options{rescan: 30 * time.Second, retryMin: 100 * time.Millisecond, retryMax: 5 * time.Second, subBuffer: 64}
	for _, opt := range opts {
		opt(&o)
	}
	dir = filepath.Clean(dir)
	l := &Loader{
		dir:       dir,
		log:       log,
		o:         o,
		ready:     make(chan struct{}),
		rescanReq: make(chan struct{}, 1),
		subs:      make(map[*subscriber]struct{}),
	}
	l.snap.Store(&Snapshot{dir: dir, dirErr: fmt.Errorf("servicedef dir %s: not loaded yet", dir)})
	return l
}

// Dir is the watched directory.
func (l *Loader) Dir() string { return l.dir }

// Ready is closed once the first full scan has been published (successful or not).
func (l *Loader) Ready() <-chan struct{} { return l.ready }

// Snapshot returns the current snapshot.
func (l *Loader) Snapshot() *Snapshot { return l.snap.Load() }

// Lookup reads service from the current snapshot: no lock, no disk.
func (l *Loader) Lookup(service string) Lookup { return l.snap.Load().Lookup(service) }

// ServiceNames lists the services of the current snapshot.
func (l *Loader) ServiceNames() []string { return l.snap.Load().ServiceNames() }

// Run watches the directory until ctx is done. A missing directory is created 0700; one that
// cannot be created or is not private (CheckDir) is reported, served as an error to every
// Lookup, and retried with backoff. Run returns nil when ctx is done, and closes every
// subscriber channel.
func (l *Loader) Run(ctx context.Context) error {
	if !l.run.CompareAndSwap(false, true) {
		return errors.New("servicedef loader: Run called twice")
	}
	defer l.closeSubs()
	if l.dir == "" || !filepath.IsAbs(l.dir) {
		err := fmt.Errorf("servicedef dir %q: must be an absolute path", l.dir)
		l.publishDirErr(err)
		return err
	}
	dirRetry := backoff.New(backoff.Policy{Initial: l.o.retryMin, Max: l.o.retryMax})
	tr := newRetrier()
	var lastErr string
	for {
		watched, err := l.guardedSession(ctx, tr)
		if ctx.Err() != nil {
			return nil
		}
		if watched {
			dirRetry.Reset()
		}
		delay := l.o.retryMin // also the wait if logging itself panics
		_ = l.guard("log", func() error {
			switch {
			case errors.Is(err, errSessionPanic): // logged where it was recovered
				delay = dirRetry.Next()
			case isTransient(err):
				l.transient(tr, err)
				delay = tr.delay()
			default:
				ev := l.log.Debug()
				if err.Error() != lastErr {
					ev = l.log.Error()
					lastErr = err.Error()
				}
				delay = dirRetry.Next()
				ev.Err(err).Str("dir", l.dir).Stringer("retry_in", delay).Msg("servicedef directory is unusable; definitions from it are refused until it is fixed")
			}
			return nil
		})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// handleEvent applies one fsnotify event. Events on the directory itself (a chmod, a
// removal) call for a full rescan; events on a *.servicedef name re-read that one file.
func (l *Loader) handleEvent(ev fsnotify.Event) error {
	if filepath.Clean(ev.Name) == l.dir {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return fmt.Errorf("servicedef dir %s: removed or renamed while watched", l.dir)
		}
		return l.rescan()
	}
	if ev.Op == fsnotify.Chmod {
		return nil
	}
	stem, ok := l.stemOf(filepath.Base(ev.Name))
	if !ok {
		return nil
	}
	return l.reload(stem)
}

func (l *Loader) markReady() { l.once.Do(func() { close(l.ready) }) }

// publish stores next, then logs and announces what changed since old. Only the Run
// goroutine publishes, so old is always the snapshot next replaces.
func (l *Loader) publish(old, next *Snapshot) {
	l.snap.Store(next)
	changes := diff(old, next)
	for _, c := range changes {
		_ = l.guard("log", func() error { l.logChange(c); return nil })
	}
	_ = l.guard("notify", func() error { l.notify(changes); return nil })
	// After notify: whoever subscribes once Ready is closed sees only later changes.
	l.markReady()
}

func (l *Loader) publishDirErr(err error) {
	old := l.snap.Load()
	l.publish(old, &Snapshot{dir: l.dir, dirErr: err})
}

func (l *Loader) logChange(c Change) {
	log := l.log.With().Str("service", c.Service).Str("path", filepath.Join(l.dir, c.Service+Ext)).Logger()
	switch c.Kind {
	case Loaded:
		log.Info().Str("binary_path", c.Def.GetBinaryPath()).Msg("service definition loaded")
	case Changed:
		log.Info().Str("binary_path", c.Def.GetBinaryPath()).Msg("service definition changed")
	case Removed:
		log.Info().Msg("service definition removed")
	case Rejected:
		log.Error().Err(c.Err).Bool("kept_last_good", c.Def != nil).Msg("service definition rejected")
	}
}
