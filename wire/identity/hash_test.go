package identity_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/rpbroker/broker/wire/identity"
)

func TestHashFile(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 1024, 1<<20 + 7} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 31)
		}
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := identity.HashFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got != blake3.Sum256(data) {
			t.Errorf("size %d: hash differs from blake3.Sum256", size)
		}
	}
	if _, err := identity.HashFile(filepath.Join(dir, "missing")); !os.IsNotExist(errorsUnwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// The cache is keyed by (dev, inode, size, mtime): same key → cached, any change → rehash.
func TestHasherCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bin")
	old := []byte("version one")
	if err := os.WriteFile(p, old, 0o600); err != nil {
		t.Fatal(err)
	}
	var h identity.Hasher
	first, err := h.HashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// Same size, same mtime, same inode: indistinguishable, so the cached value is served.
	if err := os.WriteFile(p, []byte("version two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.HashFile(p); got != first {
		t.Fatal("same key was re-hashed")
	}
	if got, _ := identity.HashFile(p); got == first {
		t.Fatal("uncached hash did not see the new content")
	}
	// A new mtime is a new key.
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.HashFile(p); got != blake3.Sum256([]byte("version two")) {
		t.Fatal("changed mtime served a stale hash")
	}
}

func TestSelf(t *testing.T) {
	boot, err := identity.BootID()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(boot) {
		t.Errorf("boot id %q", boot)
	}
	self, err := identity.Self("/tmp/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	want, err := identity.OfPID(os.Getpid(), "/tmp/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Verify(self, want); err != nil {
		t.Fatal(err)
	}
	if self.StartedAtUnixMs != want.StartedAtUnixMs {
		t.Errorf("started_at %d vs %d", self.StartedAtUnixMs, want.StartedAtUnixMs)
	}
	started := time.UnixMilli(int64(self.StartedAtUnixMs))
	if time.Since(started) < 0 || time.Since(started) > time.Hour {
		t.Errorf("started_at %v is not around now", started)
	}
	if self.ExeHashAlgorithm != "blake3" || len(self.ExeHash) != 32 || self.BootId != boot {
		t.Errorf("self %v", self)
	}
	for _, pid := range []int{0, -1, 1 << 30} {
		if _, err := identity.OfPID(pid, "x"); err == nil || !strings.Contains(err.Error(), "identity of pid") {
			t.Errorf("OfPID(%d): %v", pid, err)
		}
	}
}
