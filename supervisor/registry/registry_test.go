package registry

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestLookupPrunesDeadBackends(t *testing.T) {
	r := New()
	cmd := startSleeper(t)
	p, err := WatchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	k := Key{Instance: "private:zc", Service: "zc", Version: "1.0.0"}
	b := NewBackend(k, "/tmp/x.sock", p, "registered")
	r.Add(b)

	for _, tc := range []struct {
		inst, svc, ver string
		want           bool
	}{
		{"private:zc", "zc", "1.0.0", true},
		{"shared", "zc", "1.0.0", false}, // another instance cannot see it
		{"private:zc", "zc", "1.0.1", false},
		{"private:zc", "other", "1.0.0", false},
	} {
		if got := r.Lookup(tc.inst, tc.svc, tc.ver) != nil; got != tc.want {
			t.Errorf("Lookup(%s,%s,%s) found=%v, want %v", tc.inst, tc.svc, tc.ver, got, tc.want)
		}
	}

	cmd.Process.Kill()
	cmd.Wait()
	if !p.Wait(5000) {
		t.Fatal("pidfd did not report the exit")
	}
	if r.Lookup("private:zc", "zc", "1.0.0") != nil {
		t.Fatal("dead backend returned")
	}
	if len(r.List()) != 0 {
		t.Fatal("dead backend not pruned")
	}
}

func TestRemoveOnlyCurrentEntry(t *testing.T) {
	r := New()
	k := Key{Instance: "shared", Service: "zc", Version: "1.0.0"}
	old, cur := NewBackend(k, "/a", nil, "launch"), NewBackend(k, "/b", nil, "launch")
	r.Add(old)
	r.Add(cur)
	if r.Remove(old) {
		t.Fatal("removing a replaced entry must not drop its successor")
	}
	if got := r.List(); len(got) != 1 || got[0] != cur {
		t.Fatalf("List = %v, want only the current entry", got)
	}
}

// A closed Proc reports the process gone without polling its released descriptor,
// whose number the next open may reuse; a live one is not reported exited, and an
// observed exit stays observed.
func TestProcClose(t *testing.T) {
	cmd := startSleeper(t)
	p, err := WatchPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("live process reported exited")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var fds [2]int
	if err := unix.Pipe(fds[:]); err != nil { // likely takes the released number
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if !p.Exited() || !p.Wait(-1) {
		t.Fatal("closed Proc not reported exited")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
