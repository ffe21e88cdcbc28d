package identity

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestPeerCredNamesThisProcess(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "rpbpc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, err := PeerCred(c.(*net.UnixConn))
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Geteuid() {
		t.Fatalf("cred %+v, want pid %d uid %d", cred, os.Getpid(), os.Geteuid())
	}
}
