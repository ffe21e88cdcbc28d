package servicedef

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// EnvDir overrides the service definition directory (v1).
const EnvDir = "RUNNING_PROCESS_SERVICE_DEF_DIR"

// ErrInsecureDir marks a directory that exists but must not be trusted (v1 refuses to load
// definitions from it).
var ErrInsecureDir = errors.New("insecure directory")

// DefaultDir is the v1 service definition directory on Linux: $RUNNING_PROCESS_SERVICE_DEF_DIR
// when set, else $XDG_CONFIG_HOME/running-process/services, else
// <home>/.config/running-process/services. Empty variables count as unset, as in v1, so an
// empty override never means "the working directory".
func DefaultDir(getenv func(string) string, home string) string {
	if d := getenv(EnvDir); d != "" {
		return d
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "running-process", "services")
	}
	if home == "" {
		home = os.TempDir() // v1 falls back the same way
	}
	return filepath.Join(home, ".config", "running-process", "services")
}

// CheckDir verifies that dir can be trusted for service definitions (v1): it exists, is a
// real directory (not a symlink), is owned by the effective uid and is not accessible by
// group or others. Each error says how to fix it.
func CheckDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("servicedef dir %s: does not exist (create it with: mkdir -m 700 %s): %w", dir, dir, err)
	}
	if err != nil {
		return fmt.Errorf("servicedef dir %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("servicedef dir %s: is a symlink (use the real directory path): %w", dir, ErrInsecureDir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("servicedef dir %s: is not a directory: %w", dir, ErrInsecureDir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if euid := os.Geteuid(); int(st.Uid) != euid {
			return fmt.Errorf("servicedef dir %s: owned by uid %d, not by the broker's euid %d (chown it or use another directory): %w", dir, st.Uid, euid, ErrInsecureDir)
		}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("servicedef dir %s: mode %04o lets group/others in (run: chmod 700 %s): %w", dir, perm, dir, ErrInsecureDir)
	}
	return nil
}
