package wire

import (
	"errors"
	"testing"
)

func TestParseHeader(t *testing.T) {
	cases := []struct {
		name string
		hdr  []byte
		max  uint32
		want uint32
		err  error
	}{
		{"empty body", []byte{1, 0, 0, 0, 0}, 10, 0, nil},
		{"little endian", []byte{1, 0x64, 0x01, 0, 0}, 1 << 10, 356, nil},
		{"body follows", []byte{1, 3, 0, 0, 0, 'a', 'b', 'c'}, 10, 3, nil},
		{"at the cap", []byte{1, 10, 0, 0, 0}, 10, 10, nil},
		{"over the cap", []byte{1, 11, 0, 0, 0}, 10, 0, ErrTooLarge},
		{"bad framing byte", []byte{2, 0, 0, 0, 0}, 10, 0, ErrFramingVersion},
		{"short", []byte{1, 0, 0}, 10, 0, ErrHeaderEOF},
		{"nothing", nil, 10, 0, ErrHeaderEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := ParseHeader(c.hdr, c.max)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if n != c.want {
				t.Fatalf("n = %d, want %d", n, c.want)
			}
		})
	}
}
