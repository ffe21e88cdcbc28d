package servicedef

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// MaxFileSize caps a .servicedef file; real ones are a few hundred bytes.
const MaxFileSize = 1 << 20

// ensureDir creates a missing directory 0700 and checks that it can be trusted.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("servicedef dir %s: create: %w", dir, err)
	}
	return CheckDir(dir)
}

// stemOf returns the service a file name stands for, if it is a *.servicedef name. Names
// that cannot be services (e.g. "Foo.servicedef") are logged and skipped: no Hello can ask
// for them.
func (l *Loader) stemOf(base string) (string, bool) {
	if !strings.HasSuffix(base, Ext) {
		return "", false
	}
	stem := strings.TrimSuffix(base, Ext)
	if !names.ValidService(stem) {
		l.log.Warn().Str("path", filepath.Join(l.dir, base)).Msg("ignoring file: its name is not <service>.servicedef with a valid service name")
		return "", false
	}
	return stem, true
}

// rescan re-reads the whole directory and publishes the result. It fails, after publishing
// the failure, when the directory is no longer usable. A transient failure (see isTransient)
// publishes nothing when it hits the directory, and keeps a file's previous entry (or leaves
// a new file out) when it hits the file; it is returned so that the caller retries.
func (l *Loader) rescan() error {
	if err := CheckDir(l.dir); err != nil {
		if !isTransient(err) {
			l.publishDirErr(err)
		}
		return err
	}
	des, err := os.ReadDir(l.dir)
	if err != nil {
		err = fmt.Errorf("servicedef dir %s: list: %w", l.dir, err)
		if !isTransient(err) {
			l.publishDirErr(err)
		}
		return err
	}
	old := l.snap.Load()
	next := &Snapshot{dir: l.dir, entries: make(map[string]*entry, len(des))}
	var terr error
	for _, de := range des {
		stem, ok := l.stemOf(de.Name())
		if !ok {
			continue
		}
		e, ok, err := l.loadFile(filepath.Join(l.dir, de.Name()), old.entries[stem])
		if err != nil && terr == nil {
			terr = err
		}
		if ok {
			next.entries[stem] = e
		}
	}
	l.publish(old, next)
	return terr
}

// reload re-reads one service's file and publishes the result. It returns only a
// transient failure, after which the snapshot is unchanged.
func (l *Loader) reload(stem string) error {
	old := l.snap.Load()
	if old.dirErr != nil {
		return nil // the directory is refused as a whole; the next rescan decides
	}
	prev := old.entries[stem]
	e, ok, err := l.loadFile(filepath.Join(l.dir, stem+Ext), prev)
	if err != nil || (ok && e == prev) {
		return err
	}
	next := &Snapshot{dir: l.dir, entries: maps.Clone(old.entries)}
	if ok {
		next.entries[stem] = e
	} else {
		delete(next.entries, stem)
	}
	l.publish(old, next)
	return nil
}

// loadFile reads and decodes one file. ok is false when the file does not exist. A failure
// keeps prev's last good definition; an unchanged result returns prev itself so that
// snapshots share entries and diff sees no change. A transient failure returns prev as it
// is (ok when there is one) and the error, so that nothing is dropped and the caller retries.
func (l *Loader) loadFile(path string, prev *entry) (e *entry, ok bool, transient error) {
	b, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		err = fmt.Errorf("servicedef %s: %w", path, err)
		if isTransient(err) {
			return prev, prev != nil, err
		}
	}
	var def *wirepb.ServiceDefinition
	if err == nil {
		def, err = l.decode(path, b)
	}
	if err != nil {
		if prev != nil && prev.err != nil && prev.err.Error() == err.Error() {
			return prev, true, nil
		}
		return &entry{path: path, def: prev.lastGood(), err: err}, true, nil
	}
	if prev != nil && prev.err == nil && proto.Equal(prev.def, def) {
		return prev, true, nil
	}
	return &entry{path: path, def: def}, true, nil
}

func (e *entry) lastGood() *wirepb.ServiceDefinition {
	if e == nil {
		return nil
	}
	return e.def
}

// Load reads, decodes and validates the definition at path. Errors name the path; a
// missing file matches fs.ErrNotExist.
func Load(path string) (*wirepb.ServiceDefinition, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("servicedef %s: %w", path, err)
	}
	return Decode(path, b)
}

// ReadFile reads a regular file of at most MaxFileSize bytes. O_NONBLOCK keeps a FIFO
// dropped into the directory from blocking the reader.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return b, nil
}
