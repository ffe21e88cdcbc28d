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
	"github.com/rs/zerolog"
)

// Option tunes a Loader.
type Option func(*options)

type options struct {
	rescan    time.Duration
	retryMin  time.Duration
	retryMax  time.Duration
	subBuffer int
	// dropEvent, when set, discards matching fsnotify events: tests use it to prove that the
	// rescans alone keep the snapshot right.
	dropEvent func(fsnotify.Event) bool
}

// WithRescanInterval sets the backstop full rescan period (default 30 s).
func WithRescanInterval(d time.Duration) Option { return func(o *options) { o.rescan = d } }

// WithRetryBackoff bounds the backoff between attempts to (re)open an unusable directory
// (default 100 ms doubling to 5 s).
func WithRetryBackoff(min, max time.Duration) Option {
	return func(o *options) { o.retryMin, o.retryMax = min, max }
}

// WithSubscriberBuffer sets the channel capacity of each subscriber (default 64).
func WithSubscriberBuffer(n int) Option { return func(o *options) { o.subBuffer = n } }

// Loader keeps the definitions of one directory in memory, current through an fsnotify watch
// of the directory, and publishes them as immutable snapshots.
type Loader struct {
	dir   string
	log   zerolog.Logger
	o     options
	snap  atomic.Pointer[Snapshot]
	ready chan struct{}
	once  sync.Once
	kick  chan struct{} // test hook: behave as on a watcher overflow
	run   atomic.Bool

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
		dir:   dir,
		log:   log,
		o:     o,
		ready: make(chan struct{}),
		kick:  make(chan struct{}, 1),
		subs:  make(map[*subscriber]struct{}),
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
	backoff := l.o.retryMin
	var lastErr string
	for {
		watched, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if watched {
			backoff = l.o.retryMin
		}
		ev := l.log.Debug()
		if err.Error() != lastErr {
			ev = l.log.Error()
			lastErr = err.Error()
		}
		ev.Err(err).Str("dir", l.dir).Dur("retry_in", backoff).Msg("servicedef directory is unusable; definitions from it are refused until it is fixed")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, l.o.retryMax)
	}
}

// session prepares the directory, watches it and applies events until ctx is done (nil) or
// the directory or the watch becomes unusable (the error). watched reports whether the
// watch was established, which resets the caller's backoff.
func (l *Loader) session(ctx context.Context) (watched bool, err error) {
	if err := ensureDir(l.dir); err != nil {
		l.publishDirErr(err)
		return false, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		// Without a watch the retry loop still rescans on every attempt: polling.
		err = fmt.Errorf("servicedef dir %s: watch: %w", l.dir, err)
		if rerr := l.rescan(); rerr != nil {
			return false, rerr
		}
		return false, err
	}
	defer w.Close()
	if err := w.Add(l.dir); err != nil {
		err = fmt.Errorf("servicedef dir %s: watch: %w", l.dir, err)
		if rerr := l.rescan(); rerr != nil {
			return false, rerr
		}
		return false, err
	}
	// Scan after the watch is in place so nothing written in between is missed.
	if err := l.rescan(); err != nil {
		return false, err
	}
	l.log.Info().Str("dir", l.dir).Int("services", len(l.snap.Load().entries)).Msg("watching servicedef directory")

	tick := time.NewTicker(l.o.rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case ev, ok := <-w.Events:
			if !ok {
				return true, fmt.Errorf("servicedef dir %s: watcher stopped", l.dir)
			}
			if err := l.handleEvent(ev); err != nil {
				return true, err
			}
		case werr, ok := <-w.Errors:
			if !ok {
				return true, fmt.Errorf("servicedef dir %s: watcher stopped", l.dir)
			}
			if err := l.watchError(werr); err != nil {
				return true, err
			}
		case <-l.kick:
			if err := l.watchError(fsnotify.ErrEventOverflow); err != nil {
				return true, err
			}
		case <-tick.C:
			if err := l.rescan(); err != nil {
				return true, err
			}
		}
	}
}

// watchError answers a watcher error or overflow: events may have been lost, so rescan.
func (l *Loader) watchError(err error) error {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		l.log.Warn().Str("dir", l.dir).Msg("servicedef watch overflowed; rescanning the directory")
	} else {
		l.log.Warn().Err(err).Str("dir", l.dir).Msg("servicedef watch error; rescanning the directory")
	}
	return l.rescan()
}

// handleEvent applies one fsnotify event. Events on the directory itself (a chmod, a
// removal) call for a full rescan; events on a *.servicedef name re-read that one file.
func (l *Loader) handleEvent(ev fsnotify.Event) error {
	if l.o.dropEvent != nil && l.o.dropEvent(ev) {
		return nil
	}
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
	l.reload(stem)
	return nil
}

func (l *Loader) markReady() { l.once.Do(func() { close(l.ready) }) }

// publish stores next, then logs and announces what changed since old. Only the Run
// goroutine publishes, so old is always the snapshot next replaces.
func (l *Loader) publish(old, next *Snapshot) {
	l.snap.Store(next)
	changes := diff(old, next)
	for _, c := range changes {
		l.logChange(c)
	}
	l.notify(changes)
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

// simulateOverflow makes the Run loop act as if the watcher had overflowed (tests).
func (l *Loader) simulateOverflow() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}
