// Package upgrade carries a running broker's state across an execve of a new broker image
// (`broker upgrade`, SIGUSR2): the versioned state format, the descriptors kept open
// across the exec, the exec itself and the restore side in the new image.
package upgrade

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// FormatVersion is the state format this image writes and the newest it reads. Bump it
// when a change would make an older image misread the state (a field's meaning changes);
// adding a field does not need a bump: older images skip it with a warning.
const FormatVersion uint32 = 1

// MaxStateSize bounds what Decode accepts: the state of thousands of backends is well
// below it, and a corrupt length must not make the new image allocate without bound.
const MaxStateSize = 64 << 20

// The envelope is magic, format version, payload length and CRC-32C of the payload, then
// the payload (a statepb.State). Magic and version come first and never move, so that any
// image can tell a newer format from a corrupt one.
var magic = [8]byte{'R', 'P', 'B', 'S', 'T', 'A', 'T', 'E'}

const headerSize = 8 + 4 + 8 + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrNewerFormat refuses a state written in a format newer than FormatVersion.
var ErrNewerFormat = errors.New("state format is newer than this broker understands")

// ErrCorrupt refuses a state that is truncated, altered or not a state at all.
var ErrCorrupt = errors.New("state is corrupt")

// Encode serializes st in the current format.
func Encode(st *statepb.State) ([]byte, error) {
	return encodeVersion(st, FormatVersion)
}

func encodeVersion(st *statepb.State, version uint32) ([]byte, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	out := make([]byte, headerSize, headerSize+len(payload))
	copy(out, magic[:])
	binary.BigEndian.PutUint32(out[8:], version)
	binary.BigEndian.PutUint64(out[12:], uint64(len(payload)))
	binary.BigEndian.PutUint32(out[20:], crc32.Checksum(payload, castagnoli))
	return append(out, payload...), nil
}

// Version reads the format version of an encoded state without decoding it (the
// pre-check of a new binary).
func Version(b []byte) (uint32, error) {
	if len(b) < 12 || !bytes.Equal(b[:8], magic[:]) {
		return 0, fmt.Errorf("%w: no state header (%d bytes)", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint32(b[8:]), nil
}

// Decode parses an encoded state. A newer format is refused with ErrNewerFormat, a
// truncated or altered one with ErrCorrupt. Fields this image does not know (written by
// a newer image of the same format) are skipped; warn, when set, is told each one.
func Decode(b []byte, warn func(string)) (*statepb.State, error) {
	v, err := Version(b)
	if err != nil {
		return nil, err
	}
	switch {
	case v > FormatVersion:
		return nil, fmt.Errorf("%w: the state is format v%d, this broker reads up to v%d", ErrNewerFormat, v, FormatVersion)
	case v == 0:
		return nil, fmt.Errorf("%w: format version 0", ErrCorrupt)
	}
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: header truncated at %d bytes", ErrCorrupt, len(b))
	}
	n := binary.BigEndian.Uint64(b[12:])
	if n > MaxStateSize {
		return nil, fmt.Errorf("%w: payload length %d over the %d limit", ErrCorrupt, n, MaxStateSize)
	}
	payload := b[headerSize:]
	if uint64(len(payload)) != n {
		return nil, fmt.Errorf("%w: payload is %d bytes, header says %d", ErrCorrupt, len(payload), n)
	}
	if sum := crc32.Checksum(payload, castagnoli); sum != binary.BigEndian.Uint32(b[20:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	st := &statepb.State{}
	if err := proto.Unmarshal(payload, st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if warn != nil {
		for _, u := range unknownFields(st.ProtoReflect(), "state") {
			warn(u)
		}
	}
	return st, nil
}

// unknownFields names every message under m that carries fields this image does not know.
func unknownFields(m protoreflect.Message, path string) []string {
	var out []string
	if u := m.GetUnknown(); len(u) > 0 {
		out = append(out, fmt.Sprintf("%s: %d bytes of unknown fields skipped (written by a newer broker)", path, len(u)))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				out = append(out, unknownFields(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i))...)
			}
		case fd.IsMap():
			// Only maps of scalars exist in the state; their entries cannot carry unknowns
			// that survive decoding.
		case fd.Message() != nil:
			out = append(out, unknownFields(v.Message(), name)...)
		}
		return true
	})
	return out
}
