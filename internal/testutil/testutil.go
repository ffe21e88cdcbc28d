// Package testutil holds the fixtures many packages' tests share: short socket
// directories, polling with a deadline, a concurrency-safe output buffer, copying the
// test binary and an echo round trip. It imports only the standard library so any
// package's tests can use it.
package testutil

import (
	"io"
	"os"
	"testing"
)

// ShortDir returns a fresh mode-0700 directory under /tmp, removed when the test ends:
// t.TempDir() paths can exceed the 108-byte sun_path limit for Unix sockets.
func ShortDir(t testing.TB) string {
	t.Helper()
	return ShortDirIn(t, "/tmp")
}

// ShortDirIn is ShortDir under base, e.g. a tmpfs for benchmarks.
func ShortDirIn(t testing.TB, base string) string {
	t.Helper()
	d, err := os.MkdirTemp(base, "rpb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// CopyFile copies src to dst (created or truncated) with mode, e.g. the test binary
// into a directory another user can exec from.
func CopyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := Copy(src, dst, mode); err != nil {
		t.Fatal(err)
	}
}

// Copy is CopyFile for TestMain, where there is no testing.TB.
func Copy(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
