package servicedef

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fsnotify/fsnotify"
)

// session prepares the directory, watches it and applies events until ctx is done (nil) or
// the directory or the watch becomes unusable (the error). watched reports whether the
// watch was established, which resets the caller's backoff. Transient failures inside a
// watched session do not end it: tr schedules a full rescan, since the events that failed
// are not delivered again.
func (l *Loader) session(ctx context.Context, tr *retrier) (watched bool, err error) {
	defer tr.disarm()
	if err := ensureDir(l.dir); err != nil {
		if !isTransient(err) {
			l.publishDirErr(err)
		}
		return false, err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return false, l.unwatched(fmt.Errorf("servicedef dir %s: watch: %w", l.dir, err))
	}
	defer w.Close()
	if err := w.Add(l.dir); err != nil {
		return false, l.unwatched(fmt.Errorf("servicedef dir %s: watch: %w", l.dir, err))
	}
	// Scan after the watch is in place so nothing written in between is missed.
	if err := l.scan(tr); err != nil {
		return false, err
	}
	l.log.Info().Str("dir", l.dir).Int("services", len(l.snap.Load().entries)).Msg("watching servicedef directory")

	tick := time.NewTicker(l.o.rescan)
	defer tick.Stop()
	for {
		var fn func() error
		select {
		case <-ctx.Done():
			return true, nil
		case ev, ok := <-w.Events:
			if !ok {
				return true, fmt.Errorf("servicedef dir %s: watcher stopped", l.dir)
			}
			fn = func() error { return l.step(tr, func() error { return l.handleEvent(ev) }) }
		case werr, ok := <-w.Errors:
			if !ok {
				return true, fmt.Errorf("servicedef dir %s: watcher stopped", l.dir)
			}
			fn = func() error { l.logWatchError(werr); return l.scan(tr) }
		case <-l.rescanReq:
			fn = func() error {
				l.log.Info().Str("dir", l.dir).Msg("servicedef rescan requested")
				return l.scan(tr)
			}
		case <-tick.C:
			fn = func() error { return l.scan(tr) }
		case <-tr.c:
			tr.fired()
			fn = func() error { return l.scan(tr) }
		}
		// The boundary of one event: a panic costs this event, not the watch.
		if err := l.guard("event", fn); err != nil {
			return true, err
		}
	}
}

// unwatched answers a failure to set up the watch. The directory is still read, so the Run
// loop's retries poll it until a watch can be had; a failed read is the more pressing error.
func (l *Loader) unwatched(werr error) error {
	if err := l.guard("event", l.rescan); err != nil {
		return err
	}
	return werr
}

// step applies one event. A transient failure is logged and schedules a full rescan; only
// an unusable directory ends the session.
func (l *Loader) step(tr *retrier, fn func() error) error {
	err := l.guard("event", fn)
	if err != nil && isTransient(err) {
		l.transient(tr, err)
		tr.arm()
		return nil
	}
	return err
}

// scan is a full rescan as a step; a successful one ends a transient spell.
func (l *Loader) scan(tr *retrier) error {
	ok := false
	err := l.step(tr, func() error {
		err := l.rescan()
		ok = err == nil
		return err
	})
	if ok {
		if lasted, n := tr.ok(); n > 0 {
			l.log.Info().Str("dir", l.dir).Stringer("lasted", lasted.Round(time.Millisecond)).Int("failures", n).Msg("servicedef directory readable again; definitions rescanned")
		}
	}
	return err
}

// transient logs a transient failure, loudly once per spell. Before the first snapshot it
// publishes one that says why nothing is loaded yet, so Ready does not wait on the shortage.
func (l *Loader) transient(tr *retrier, err error) {
	ev := l.log.Debug()
	if tr.fail() {
		ev = l.log.Warn()
	}
	ev.Err(err).Str("dir", l.dir).Msg("servicedef directory temporarily unreadable; the last good definitions stay in effect and the read is retried")
	select {
	case <-l.ready:
	default:
		l.publishDirErr(fmt.Errorf("servicedef dir %s: not loaded yet, retrying: %w", l.dir, err))
	}
}

// logWatchError reports a watcher error or overflow: events may have been lost, so the
// caller rescans.
func (l *Loader) logWatchError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		l.log.Warn().Str("dir", l.dir).Msg("servicedef watch overflowed; rescanning the directory")
	} else {
		l.log.Warn().Err(err).Str("dir", l.dir).Msg("servicedef watch error; rescanning the directory")
	}
}

// Rescan asks the running Loader to re-read the whole directory soon, as it does after a
// watch overflow: for changes the watch cannot see (a file written through a hard link or a
// bind mount elsewhere) or an operator's explicit reload. It never blocks; requests made
// while one is pending coalesce.
func (l *Loader) Rescan() {
	select {
	case l.rescanReq <- struct{}{}:
	default:
	}
}
