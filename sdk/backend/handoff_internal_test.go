package backend

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The receive buffer for the token message's control data fits maxPassedFDs descriptors.
func TestOOBBufSize(t *testing.T) {
	if want := unix.CmsgSpace(4 * maxPassedFDs); oobBuf != want {
		t.Fatalf("oobBuf = %d, want unix.CmsgSpace(4*%d) = %d", oobBuf, maxPassedFDs, want)
	}
}
