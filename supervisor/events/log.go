package events

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// ErrClosed is counted for events emitted after Close; they still reach Recent.
var ErrClosed = errors.New("event log closed")

// Options tune a Log; zero values take the defaults.
type Options struct {
	MaxBytes       int64 // rotate before the file would exceed this; default 10 MiB
	Keep           int   // rotated files kept as path.1 … path.Keep; default 3
	Recent         int   // events kept in memory for Recent; default 256
	BrokerInstance string
	Now            func() time.Time // default time.Now
}

// Stats count what happened to emitted events since Open.
type Stats struct {
	Written   uint64 // records appended to the file
	Truncated uint64 // events cut down by Bound to fit a record
	Rotations uint64
	Errors    uint64 // events not written, or rotation trouble
	LastErr   error
}

// Log appends lifecycle events to a file. It is safe for concurrent use; Emit holds a
// mutex only for the in-memory ring, one write(2) and, every MaxBytes, a rotation.
type Log struct {
	path string
	o    Options

	mu     sync.Mutex
	f      *os.File // nil after a failed (re)open; the next Emit retries
	size   int64
	closed bool
	ring   []*wirepb.LifecycleEvent
	next   int // ring slot for the next event
	stats  Stats
}

// Open creates path's directory (0700) if missing and opens path (0600) for appending.
func Open(path string, o Options) (*Log, error) {
	if path == "" {
		return nil, errors.New("event log: empty path")
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 10 << 20
	}
	if o.Keep <= 0 {
		o.Keep = 3
	}
	if o.Recent <= 0 {
		o.Recent = 256
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Log{path: path, o: o, ring: make([]*wirepb.LifecycleEvent, 0, o.Recent)}
	if err := l.openLocked(); err != nil {
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	return l, nil
}

// Emit records e. It never fails the caller: failures are counted in Stats.
func (l *Log) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = l.o.Now()
	}
	m := e.Proto(l.o.BrokerInstance)
	rec, truncated, err := Encode(m) // outside the lock: the only CPU work
	l.mu.Lock()
	defer l.mu.Unlock()
	l.remember(m)
	if truncated {
		l.stats.Truncated++
	}
	if err == nil {
		err = l.writeLocked(rec)
	}
	if err != nil {
		l.failLocked(fmt.Errorf("event log %s: %s event: %w", l.path, e.Kind, err))
		return
	}
	l.stats.Written++
}

// Recent returns the most recent events as recorded (bounded, millisecond times), oldest first.
func (l *Log) Recent() []Event {
	ms := l.recent()
	out := make([]Event, len(ms))
	for i, m := range ms {
		out[i] = FromProto(m)
	}
	return out
}

// RecentJSON is Recent in the snake_case form of JSON, for admin DUMP.
func (l *Log) RecentJSON() []any {
	ms := l.recent()
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = JSON(m)
	}
	return out
}

// Stats returns the counters so far.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close closes the file; later events only reach Recent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("event log %s: close: %w", l.path, err)
	}
	return nil
}

// FromProto is the Event view of a recorded event; Version comes back from extra["version"].
func FromProto(m *wirepb.LifecycleEvent) Event {
	return Event{
		Kind:         m.GetKind(),
		Service:      m.GetServiceName(),
		Version:      m.GetExtra()["version"],
		Reason:       m.GetReason(),
		RequestID:    m.GetRequestId(),
		Instance:     m.GetBrokerInstance(),
		PID:          m.GetPid(),
		ConnectionID: m.GetConnectionId(),
		Severity:     Severity(m.GetSeverityNumber()),
		Extra:        maps.Clone(m.GetExtra()),
		Time:         time.UnixMilli(int64(m.GetTsMs())),
	}
}

func (l *Log) recent() []*wirepb.LifecycleEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < cap(l.ring) {
		return append([]*wirepb.LifecycleEvent(nil), l.ring...)
	}
	return append(append(make([]*wirepb.LifecycleEvent, 0, len(l.ring)), l.ring[l.next:]...), l.ring[:l.next]...)
}

// remember keeps m in the ring; recorded messages are never mutated afterwards.
func (l *Log) remember(m *wirepb.LifecycleEvent) {
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, m)
		return
	}
	l.ring[l.next] = m
	l.next = (l.next + 1) % len(l.ring)
}

func (l *Log) failLocked(err error) {
	l.stats.Errors++
	l.stats.LastErr = err
}

func (l *Log) writeLocked(rec []byte) error {
	if l.closed {
		return ErrClosed
	}
	if l.f == nil {
		if err := l.openLocked(); err != nil {
			return err
		}
	}
	if l.size > 0 && l.size+int64(len(rec)) > l.o.MaxBytes {
		if err := l.rotateLocked(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(rec)
	if err != nil {
		// Cut a partial record back off so the file stays a sequence of whole records.
		if n > 0 {
			err = errors.Join(err, l.f.Truncate(l.size))
		}
		return fmt.Errorf("write: %w", err)
	}
	l.size += int64(n)
	return nil
}

// rotateLocked shifts path.i to path.i+1 (dropping path.Keep), path to path.1, and
// reopens path. Rename trouble is counted but the log carries on with whatever file
// it can open; a failed reopen leaves l.f nil for the next Emit to retry.
func (l *Log) rotateLocked() error {
	var errs []error
	if err := l.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close: %w", err))
	}
	l.f = nil
	for i := l.o.Keep - 1; i >= 0; i-- {
		from := l.path
		if i > 0 {
			from += "." + strconv.Itoa(i)
		}
		if err := os.Rename(from, l.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rotate: %w", err))
		}
	}
	l.stats.Rotations++
	if len(errs) > 0 {
		l.failLocked(fmt.Errorf("event log %s: %w", l.path, errors.Join(errs...)))
	}
	return l.openLocked()
}

func (l *Log) openLocked() error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}
