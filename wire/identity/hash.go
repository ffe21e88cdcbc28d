package identity

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/zeebo/blake3"
)

// maxCached bounds a Hasher's cache; a broker tracks a handful of backend binaries, so
// dropping everything when full is simpler than LRU and never wrong.
const maxCached = 64

// fileKey identifies one version of a file: a rewrite changes mtime or size, a replacement
// changes the inode.
type fileKey struct {
	dev, ino   uint64
	size       int64
	mtimeNanos int64
}

// Hasher computes BLAKE3 file hashes and remembers them by (dev, inode, size, mtime), so a
// probe retry does not re-hash a large binary. The zero value is ready to use; a nil
// *Hasher hashes without caching. Safe for concurrent use.
type Hasher struct {
	mu    sync.Mutex
	cache map[fileKey][32]byte
}

// HashFile returns the BLAKE3-256 of the file at path, streaming it.
func HashFile(path string) ([32]byte, error) {
	return (*Hasher)(nil).HashFile(path)
}

// HashFile returns the BLAKE3-256 of the file at path. The cache key is taken from the
// opened file, so a file swapped between stat and open cannot be mistaken for another.
func (h *Hasher) HashFile(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sum, fmt.Errorf("hash %s: %w", path, err)
	}
	key, keyed := keyOf(fi)
	if keyed && h != nil {
		h.mu.Lock()
		cached, ok := h.cache[key]
		h.mu.Unlock()
		if ok {
			return cached, nil
		}
	}
	d := blake3.New()
	if _, err := io.Copy(d, f); err != nil {
		return sum, fmt.Errorf("hash %s: %w", path, err)
	}
	copy(sum[:], d.Sum(nil))
	if keyed && h != nil {
		h.mu.Lock()
		if h.cache == nil || len(h.cache) >= maxCached {
			h.cache = make(map[fileKey][32]byte)
		}
		h.cache[key] = sum
		h.mu.Unlock()
	}
	return sum, nil
}

func keyOf(fi os.FileInfo) (fileKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() {
		return fileKey{}, false
	}
	return fileKey{
		dev:        uint64(st.Dev),
		ino:        st.Ino,
		size:       st.Size,
		mtimeNanos: st.Mtim.Nano(),
	}, true
}
