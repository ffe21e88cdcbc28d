package testutil

import (
	"io"
	"net"
	"testing"
	"time"
)

// RoundTrip dials the Unix socket ep, writes payload, half-closes, and returns everything
// the peer sent before closing: one exchange with an echo backend.
func RoundTrip(t testing.TB, ep string, payload []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// Write concurrently with the read so a peer that echoes as it reads cannot fill
	// both socket buffers and deadlock.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.UnixConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		t.Fatal(err)
	}
	return got
}
