package wire

import (
	"encoding/binary"
	"fmt"
)

// ParseHeader checks the 5-byte frame header at the start of hdr and returns the declared
// body length: ErrHeaderEOF when hdr is shorter than a header, ErrFramingVersion for a
// first byte other than 0x01, ErrTooLarge when the length exceeds maxBody. Every reader
// of frames goes through it, so the header rules live in one place.
func ParseHeader(hdr []byte, maxBody uint32) (uint32, error) {
	if len(hdr) < HeaderLen {
		return 0, &FrameError{Kind: ErrHeaderEOF}
	}
	if hdr[0] != FramingVersion {
		return 0, &FrameError{Kind: ErrFramingVersion, Err: fmt.Errorf("first byte 0x%02x", hdr[0])}
	}
	n := binary.LittleEndian.Uint32(hdr[1:HeaderLen])
	if n > maxBody {
		return 0, &FrameError{Kind: ErrTooLarge, Declared: n, Cap: maxBody}
	}
	return n, nil
}
