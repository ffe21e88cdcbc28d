// Package preflight holds the checks a broker.toml must pass before anything is served:
// directories, socket paths, service definitions and launch binaries. `broker check`,
// `broker doctor` and `broker run` call the same functions, so the tools say "ok" exactly
// when run would start.
//
// It lives under supervisor/, not in config/: config is a pure parser (docs/architecture.md,
// "The rooms"), while these checks read the filesystem and dial sockets as the running
// broker will.
package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// CheckDir checks an existing directory that will hold sockets or definitions: a real
// directory (not a symlink), owned by our euid, reachable by nobody else (v1 rules).
func CheckDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("directory %s does not exist", dir)
	}
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("directory %s is a symlink; point the path at a real directory", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s is owned by uid %d, not %d; use a directory you own", dir, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("directory %s has mode %04o; other users could reach it: chmod 700 %s", dir, perm, dir)
	}
	return nil
}

// Dir checks dir as the broker will find it at start: an existing one must pass CheckDir;
// a missing one must be one the broker may create (Creatable).
func Dir(dir, runtimeDir string) error {
	// ENOTDIR: a parent is a file; Creatable names it.
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return Creatable(dir, runtimeDir)
	}
	return CheckDir(dir)
}

// Creatable says whether the broker may create the missing dir, mode 0700. It creates the
// runtime dir and directories inside it, wherever the nearest existing parent lets it
// write. Anywhere else it creates a directory only inside one the user owns, and never as
// root: a typo in a socket path must not grow a new tree under /.
func Creatable(dir, runtimeDir string) error {
	parent, err := nearestExisting(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		return fmt.Errorf("directory %s cannot be created: %s is not a directory", dir, parent)
	}
	if err := unix.Access(parent, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("directory %s does not exist and cannot be created: %s is not writable (%w)", dir, parent, err)
	}
	if within(dir, runtimeDir) {
		return nil
	}
	hint := fmt.Sprintf("create it yourself (mkdir -m 700 %s) or put the socket under runtime_dir %s", dir, runtimeDir)
	if os.Geteuid() == 0 {
		return fmt.Errorf("directory %s does not exist; running as root the broker creates directories only under runtime_dir: %s", dir, hint)
	}
	fi, err := os.Stat(parent)
	if err != nil {
		return fmt.Errorf("directory %s: %w", parent, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s does not exist and its parent %s is owned by uid %d, not you: %s", dir, parent, st.Uid, hint)
	}
	return nil
}

// Ensure creates dir (0700, with its missing parents) when Dir allows it, then checks it.
func Ensure(dir, runtimeDir string) error {
	if err := Dir(dir, runtimeDir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return CheckDir(dir)
}

// nearestExisting is the closest ancestor of dir that exists.
func nearestExisting(dir string) (string, error) {
	p := filepath.Clean(dir)
	for {
		parent := filepath.Dir(p)
		_, err := os.Stat(parent)
		switch {
		case err == nil:
			return parent, nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("directory %s: %w", parent, err)
		case parent == p:
			return "", fmt.Errorf("directory %s: no existing parent", dir)
		}
		p = parent
	}
}

// within reports whether dir is root or below it.
func within(dir, root string) bool {
	if root == "" {
		return false
	}
	dir, root = filepath.Clean(dir), filepath.Clean(root)
	return dir == root || strings.HasPrefix(dir, strings.TrimSuffix(root, "/")+"/")
}
