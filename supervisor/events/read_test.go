package events

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

func records(t testing.TB, evs ...Event) []byte {
	t.Helper()
	var b []byte
	for _, e := range evs {
		rec, _, err := Encode(e.Proto("shared"))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, rec...)
	}
	return b
}

func TestTornLastRecord(t *testing.T) {
	whole := records(t, numbered(0), numbered(1))
	last := records(t, numbered(2))
	path := filepath.Join(t.TempDir(), "events.log")
	for cut := 1; cut < len(last); cut++ {
		if err := os.WriteFile(path, append(append([]byte(nil), whole...), last[:cut]...), 0o600); err != nil {
			t.Fatal(err)
		}
		evs, err := ReadFile(path)
		if err != nil || len(evs) != 2 || evs[1].ConnectionId != 1 {
			t.Fatalf("torn after %d bytes: %d events, %v", cut, len(evs), err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := records(t, numbered(0))
	for _, tc := range []struct {
		name string
		b    []byte
		n    int // events decoded before the error
	}{
		{"bad framing byte", append(append([]byte(nil), good...), 0x02, 1, 0, 0, 0, 0), 1},
		{"record over 512 bytes", append(append([]byte(nil), good...), 0x01, 0xfc, 1, 0, 0), 1},
		{"undecodable event", append(append([]byte(nil), good...), 0x01, 2, 0, 0, 0, 0x0a, 0x05), 1},
		{"garbage first", []byte("GET / HTTP/1.1\r\n"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := Decode(tc.b)
			if err == nil || len(evs) != tc.n {
				t.Errorf("Decode: %d events, err %v", len(evs), err)
			}
		})
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to records that
// decode to the same events.
func FuzzDecode(f *testing.F) {
	f.Add(records(f, numbered(1), Event{Kind: wirepb.EventKind_SPAWN, Extra: map[string]string{"k": "v"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := Decode(b)
		if err != nil {
			return
		}
		var again []byte
		for _, m := range evs {
			rec, _, err := Encode(proto.Clone(m).(*wirepb.LifecycleEvent))
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, rec...)
		}
		back, err := Decode(again)
		if err != nil || len(back) != len(evs) {
			t.Fatalf("re-decode: %d of %d events, %v", len(back), len(evs), err)
		}
		for i := range evs {
			if !proto.Equal(back[i], evs[i]) {
				t.Fatalf("event %d: %v became %v", i, evs[i], back[i])
			}
		}
	})
}
