package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Follow calls emit for every event of the log at path, oldest first: the rotated files
// path.N … path.1, then path, and then, like `tail -F`, every event appended after,
// across rotations (the file renamed to path.1 is read to its end before the new path
// is opened). It polls every poll (default 100 ms) and returns when ctx ends (nil), or
// on a record it cannot decode or a file it cannot read.
func Follow(ctx context.Context, path string, poll time.Duration, emit func(*wirepb.LifecycleEvent)) error {
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	// The current file is opened before the rotated ones are read: a rotation in between
	// then shows as this file's inode moving to path.1, read to its end below.
	cur, err := openLog(ctx, path, poll)
	if cur == nil {
		return err
	}
	defer func() { cur.f.Close() }()
	old, err := readFiles(rotatedFiles(path))
	for _, e := range old {
		emit(e)
	}
	if err != nil {
		return err
	}
	for {
		if err := cur.drain(emit); err != nil {
			return err
		}
		rotated, err := cur.replaced(path)
		if err != nil {
			return err
		}
		if rotated {
			// Whatever the broker wrote before renaming is in the file we hold.
			if err := cur.drain(emit); err != nil {
				return err
			}
			cur.f.Close()
			next, err := catchUp(ctx, path, cur.ino, poll, emit)
			if next == nil {
				return err
			}
			cur = next
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// catchUp reads, whole, every file rotated after the one of inode last (several
// rotations can happen between two polls), then opens path itself.
func catchUp(ctx context.Context, path string, last uint64, poll time.Duration, emit func(*wirepb.LifecycleEvent)) (*logFile, error) {
	for ctx.Err() == nil {
		next := successor(stableList(path), last)
		if next.name == path {
			l, err := openLog(ctx, path, poll)
			if l == nil {
				return nil, err
			}
			// Rotations may have passed between the look and the open (or while path
			// was waited for): it is the next file only if a new look still says so.
			if successor(stableList(path), last).ino == l.ino {
				return l, nil
			}
			l.f.Close()
			continue
		}
		l, err := openFile(next.name)
		if errors.Is(err, os.ErrNotExist) {
			continue // renamed under us: look again
		}
		if err != nil {
			return nil, err
		}
		if l.ino != next.ino { // another rotation between the look and the open
			l.f.Close()
			continue
		}
		err = l.drain(emit)
		l.f.Close()
		if err != nil {
			return nil, err
		}
		last = l.ino
	}
	return nil, nil
}

// successor is the file after the one of inode last in files; when last is not among
// them (rotated out of reach), the oldest file kept.
func successor(files []fileID, last uint64) fileID {
	for i, f := range files[:len(files)-1] {
		if f.ino == last {
			return files[i+1]
		}
	}
	return files[0]
}

type fileID struct {
	name string
	ino  uint64
}

// stableList lists path.N … path.1 and path with their inodes, oldest first, as two
// looks in a row agree on it: a look taken during a rotation (files being renamed one
// number up) could miss a file or see one twice.
func stableList(path string) []fileID {
	prev := listFiles(path)
	for {
		cur := listFiles(path)
		if slices.Equal(prev, cur) {
			return cur
		}
		prev = cur
	}
}

func listFiles(path string) []fileID {
	var out []fileID
	for _, p := range append(rotatedFiles(path), path) {
		ino, _ := inodeOf(p) // 0 for path between a rotation's rename and reopen
		out = append(out, fileID{p, ino})
	}
	return out
}

func inodeOf(path string) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// logFile is the file Follow reads, the bytes of a record not yet complete, and its
// identity to tell a rotation.
type logFile struct {
	f       *os.File
	ino     uint64
	pending []byte
}

// openLog opens path, waiting for it to appear (a broker not started yet, or between a
// rotation's rename and reopen). It returns nil and ctx's end as nil error.
func openLog(ctx context.Context, path string, poll time.Duration) (*logFile, error) {
	for {
		l, err := openFile(path)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(poll):
		}
	}
}

func openFile(path string) (*logFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	return &logFile{f: f, ino: st.Ino}, nil
}

// drain emits every whole record appended since the last call.
func (l *logFile) drain(emit func(*wirepb.LifecycleEvent)) error {
	b, err := io.ReadAll(l.f)
	if err != nil {
		return fmt.Errorf("event log %s: %w", l.f.Name(), err)
	}
	if len(b) == 0 {
		return nil
	}
	l.pending = append(l.pending, b...)
	evs, n, err := decodePrefix(l.pending)
	for _, e := range evs {
		emit(e)
	}
	if err != nil {
		return fmt.Errorf("event log %s: %w", l.f.Name(), err)
	}
	l.pending = append(l.pending[:0], l.pending[n:]...)
	return nil
}

// replaced reports whether path is no longer the file l reads (it was rotated away).
func (l *logFile) replaced(path string) (bool, error) {
	var st syscall.Stat_t
	err := syscall.Stat(path, &st)
	if errors.Is(err, syscall.ENOENT) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("event log %s: %w", path, err)
	}
	return st.Ino != l.ino, nil
}
