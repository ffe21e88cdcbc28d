package identity

// HashEntry is one remembered hash of a Hasher: the file version (device, inode, size,
// mtime) and its BLAKE3-256.
type HashEntry struct {
	Dev, Ino   uint64
	Size       int64
	MtimeNanos int64
	Sum        [32]byte
}

// Entries lists what h remembers. A broker that replaces itself in place hands them to
// its next image (Remember), which then verifies the backends it adopts without reading
// their binaries again.
func (h *Hasher) Entries() []HashEntry {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HashEntry, 0, len(h.cache))
	for k, sum := range h.cache {
		out = append(out, HashEntry{Dev: k.dev, Ino: k.ino, Size: k.size, MtimeNanos: k.mtimeNanos, Sum: sum})
	}
	return out
}

// Remember adds entries listed by Entries (of another Hasher) to h. They are keyed by file
// version exactly as HashFile keys its own, so a file rewritten since is hashed afresh.
func (h *Hasher) Remember(entries []HashEntry) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range entries {
		if h.cache == nil || len(h.cache) >= maxCached {
			h.cache = make(map[fileKey][32]byte)
		}
		h.cache[fileKey{dev: e.Dev, ino: e.Ino, size: e.Size, mtimeNanos: e.MtimeNanos}] = e.Sum
	}
}
