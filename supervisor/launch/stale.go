package launch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// staleProbeTimeout bounds the connect that tells a live backend socket from a stale one.
const staleProbeTimeout = 200 * time.Millisecond

// reclaimStale removes the backend sockets of this user in the runtime dir that nobody
// listens on: a broker killed with SIGKILL leaves them behind, and its children died with
// it. It runs in Run before any spawn can bind, so it never races this Manager's own
// bind-then-listen. A live listener (a backend of another broker sharing the dir), a file
// that is not a socket, or a socket not owned by us is left alone.
func (m *Manager) reclaimStale() {
	dir := m.o.Layout.Dir
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		m.o.Log.Warn().Err(err).Str("dir", dir).Msg("stale backend sockets not reclaimed")
		return
	}
	prefix := m.o.Layout.BackendLeaf("")
	for _, e := range ents {
		if !isBackendLeaf(e.Name(), prefix) || e.Type()&os.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, e.Name())
		removed, err := removeIfStale(path)
		switch {
		case err != nil:
			m.o.Log.Warn().Err(err).Str("socket", path).Msg("stale backend socket not reclaimed")
		case removed:
			m.o.Log.Info().Str("socket", path).Msg("reclaimed stale backend socket")
		}
	}
}

// isBackendLeaf matches <prefix>{32 lowercase hex}.sock, the names bindBackend makes.
func isBackendLeaf(name, prefix string) bool {
	rnd, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	rnd, ok = strings.CutSuffix(rnd, ".sock")
	if !ok || len(rnd) != 32 {
		return false
	}
	for _, r := range rnd {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// removeIfStale removes the socket at path if a connect is refused (nobody listens).
func removeIfStale(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, fmt.Errorf("stat: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() || fi.Mode()&os.ModeSocket == 0 {
		return false, nil
	}
	c, err := net.DialTimeout("unix", path, staleProbeTimeout)
	if err == nil {
		c.Close()
		return false, nil // live
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("probe: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove: %w", err)
	}
	return true, nil
}
