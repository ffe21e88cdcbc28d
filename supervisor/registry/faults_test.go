package registry

import (
	"fmt"
	"testing"
	"time"
)

// The last error of each target wins, targets stay apart, and the table keeps at most
// maxFaults targets, dropping the oldest.
func TestFaults(t *testing.T) {
	r := New()
	at := time.UnixMilli(1_700_000_000_000)
	a := Target{Instance: "private:a", Service: "a", Version: "1.0.0"}
	b := Target{Instance: "shared", Service: "b", Version: "2.0.0"}
	r.NoteError(a, "dial: connection refused", at)
	r.NoteError(b, "exit status 3", at)
	r.NoteError(a, "probe: exe hash mismatch", at.Add(time.Second))
	r.NoteError(b, "", at.Add(time.Second)) // no error: nothing recorded
	got := r.Faults()
	want := []Fault{{a, "probe: exe hash mismatch", at.Add(time.Second)}, {b, "exit status 3", at}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Faults = %v, want %v", got, want)
	}
	for i := range maxFaults {
		r.NoteError(Target{Instance: "shared", Service: "flood", Version: fmt.Sprint(i)}, "x", at.Add(time.Duration(2+i)*time.Second))
	}
	got = r.Faults()
	if len(got) != maxFaults {
		t.Fatalf("%d faults kept, want %d", len(got), maxFaults)
	}
	for _, f := range got {
		if f.Target == a || f.Target == b {
			t.Fatalf("oldest faults not dropped: %v", f)
		}
	}
}
