package identity

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/rpbroker/broker/wire"
)

// FuzzReadAnswer feeds arbitrary bytes as a probe answer: it must never panic, and whatever
// it accepts must satisfy every v1 check.
func FuzzReadAnswer(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzReadAnswer: good, legacy-suffixed and broken answers.
	nonce := bytes.Repeat([]byte{0x5A}, NonceLen)
	reqID := binary.LittleEndian.Uint64(nonce)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := readAnswer(bytes.NewReader(data), reqID, nonce)
		if err != nil {
			return
		}
		if p.ExeHashAlgorithm != HashAlgorithm || len(p.ExeHash) != 32 {
			t.Fatalf("accepted an invalid identity: %v", p)
		}
		if _, err := wire.ReadFrameBody(bytes.NewReader(data), maxResponse); err != nil {
			t.Fatalf("accepted bytes that do not frame: %v", err)
		}
	})
}
