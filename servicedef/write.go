package servicedef

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rpbroker/broker/wire/wirepb"
)

// WriteAtomic replaces path with b so that a reader (the Loader) sees the old file or the
// new one, never a mix: temp file in the same directory, fsync, rename, fsync the directory.
// The temp name does not end in ".servicedef", so a watcher ignores it.
func WriteAtomic(path string, b []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	// The rename is durable once the directory entry is.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Install validates def and writes it atomically as <dir>/<service>.servicedef (mode 0600),
// creating dir 0700 if needed and refusing a directory the broker would not trust.
func Install(dir string, def *wirepb.ServiceDefinition) (string, error) {
	if err := Validate(def, ""); err != nil {
		return "", err
	}
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	b, err := Encode(def)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, def.GetServiceName()+Ext)
	if err := WriteAtomic(path, b, 0o600); err != nil {
		return "", fmt.Errorf("servicedef %s: %w", path, err)
	}
	return path, nil
}
