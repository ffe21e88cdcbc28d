package upgrade

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// fullState sets every field of every message, so the round trip covers them all
// (TestFullStateSetsEveryField keeps it that way when a field is added).
func fullState() *statepb.State {
	return &statepb.State{
		Generation: 7, ConfigPath: "/etc/broker/broker.toml", WriterVersion: "1.2.3", WriterBuildId: "abc123",
		Pid: 4242, WrittenUnixNano: 1_700_000_000_000_000_001, RequestedUnixNano: 1_700_000_000_000_000_000, Binary: "/usr/bin/broker", NextBuildId: "0011223344556677",
		Hashes: []*statepb.FileHash{{Dev: 1, Ino: 2, Size: 3, MtimeNanos: 4, Sum: []byte{5}}},
		Services: []*statepb.Service{
			{Name: "echo", SocketPath: "/run/user/1000/rpb/echo.sock", ListenerFd: 5, Inode: 99, Inherited: true},
			{Name: "*", SocketPath: "/run/user/1000/rpb/star.sock", ListenerFd: 6, Inode: 100},
		},
		Backends: []*statepb.Backend{{
			Pid: 5151, Pidfd: 7, Endpoint: "/run/user/1000/rpb/be.sock", Instance: "private:echo", Service: "echo",
			Version: "1.0.0", ExeHash: []byte{1, 2, 3}, Binary: "/opt/echo/1.0.0/echo", StartedUnixNano: 11,
			LastUsedUnixNano: 12, IdleTimeoutNanos: 13, StdoutFd: 8, StderrFd: 9,
		}},
		Budgets: []*statepb.Budget{{Instance: "shared", Service: "echo", Version: "1.0.0", ExeHash: []byte{4},
			WindowStartUnixNano: 14, Attempts: 2}},
		Counters: &statepb.Counters{LastConnectionId: 1000, HellosTotal: 999, HellosByService: map[string]uint64{"echo": 998}, RefusalsByService: map[string]uint64{"echo": 3},
			UpgradesTotal: 6, ReloadsTotal: 5},
	}
}

// unset names every field of m (recursively) that holds its zero value.
func unset(m protoreflect.Message, path string) []string {
	var out []string
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := path + "." + string(fd.Name())
		if !m.Has(fd) {
			out = append(out, name)
			continue
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			// The first element stands for the list.
			out = append(out, unset(m.Get(fd).List().Get(0).Message(), name+"[0]")...)
		case fd.Message() != nil && !fd.IsMap():
			out = append(out, unset(m.Get(fd).Message(), name)...)
		}
	}
	return out
}

func TestFullStateSetsEveryField(t *testing.T) {
	if u := unset(fullState().ProtoReflect(), "state"); len(u) > 0 {
		t.Fatalf("fullState leaves fields unset, so the round trip would not cover them: %v", u)
	}
}

func TestStateRoundTrip(t *testing.T) {
	want := fullState()
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	// Through a real memfd, as the exec hands it over.
	f, err := WriteMemfd(b)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("a write to the sealed state memfd succeeded")
	}
	read, err := ReadState(f)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	got, err := Decode(read, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("round trip:\n got %v\nwant %v", got, want)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings on a state of our own format: %v", warnings)
	}
	if v, err := Version(read); err != nil || v != FormatVersion {
		t.Fatalf("Version = %d, %v; want %d", v, err, FormatVersion)
	}
}

func TestStateRefused(t *testing.T) {
	good, err := Encode(fullState())
	if err != nil {
		t.Fatal(err)
	}
	newer, err := encodeVersion(fullState(), FormatVersion+1)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte{}, good...)
	flipped[len(flipped)-3] ^= 0x40
	zero := append([]byte{}, good...)
	binary.BigEndian.PutUint32(zero[8:], 0)
	huge := append([]byte{}, good...)
	binary.BigEndian.PutUint64(huge[12:], MaxStateSize+1)
	for _, tc := range []struct {
		name string
		in   []byte
		want error
		text string
	}{
		{"newer format", newer, ErrNewerFormat, "format v2, this broker reads up to v1"},
		{"newer format, rest unreadable", newer[:14], ErrNewerFormat, "format v2"},
		{"empty", nil, ErrCorrupt, "no state header"},
		{"not a state", []byte("[broker]\nruntime_dir = \"/tmp\"\n"), ErrCorrupt, "no state header"},
		{"header truncated", good[:headerSize-1], ErrCorrupt, "header truncated"},
		{"payload truncated", good[:len(good)-1], ErrCorrupt, "header says"},
		{"trailing bytes", append(append([]byte{}, good...), 0), ErrCorrupt, "header says"},
		{"bit flipped", flipped, ErrCorrupt, "checksum"},
		{"version 0", zero, ErrCorrupt, "version 0"},
		{"length over the limit", huge, ErrCorrupt, "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Decode(tc.in, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Decode = %v, %v; want %v containing %q", st, err, tc.want, tc.text)
			}
		})
	}
}

// A newer image of the same format may add fields; this one skips them and says so.
func TestStateUnknownFieldsWarned(t *testing.T) {
	st := fullState()
	var extra []byte
	extra = protowire.AppendTag(extra, 900, protowire.BytesType)
	extra = protowire.AppendString(extra, "from the future")
	st.ProtoReflect().SetUnknown(extra)
	st.Backends[0].ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 901, protowire.VarintType), 1))
	b, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	got, err := Decode(b, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatal(err)
	}
	if got.GetGeneration() != 7 || got.GetBackends()[0].GetPid() != 5151 {
		t.Fatalf("known fields lost: %v", got)
	}
	joined := strings.Join(warnings, "\n")
	if len(warnings) != 2 || !strings.Contains(joined, "state: ") || !strings.Contains(joined, "state.backends[0]: ") {
		t.Fatalf("warnings = %q; want one for the state and one for backends[0]", warnings)
	}
}

func TestReadStateFromFile(t *testing.T) {
	b, err := Encode(fullState())
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/state"
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadState(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(got, nil); err != nil {
		t.Fatal(err)
	}
}
