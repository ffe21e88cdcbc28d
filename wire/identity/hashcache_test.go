package identity

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Entries handed to another Hasher answer for the same file version without reading it;
// a file rewritten since is hashed afresh.
func TestHasherEntriesRemembered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(path, []byte("version one"), 0o700); err != nil {
		t.Fatal(err)
	}
	var old Hasher
	sum, err := old.HashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := old.Entries()
	if len(entries) != 1 || entries[0].Sum != sum {
		t.Fatalf("entries %+v", entries)
	}
	// A remembered sum is what the next Hasher answers: here a marker no file hashes to,
	// proving the file was not read.
	marker := [32]byte{1, 2, 3}
	entries[0].Sum = marker
	var next Hasher
	next.Remember(entries)
	if got, err := next.HashFile(path); err != nil || got != marker {
		t.Fatalf("remembered file: %x, %v; want the remembered sum", got, err)
	}
	// Rewritten: another version, hashed afresh.
	if err := os.WriteFile(path, []byte("version two!"), 0o700); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	want, err := HashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := next.HashFile(path); err != nil || got != want || got == marker {
		t.Fatalf("rewritten file: %x, %v; want %x", got, err, want)
	}
}
