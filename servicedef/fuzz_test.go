package servicedef

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to bytes that decode
// to an equal, still valid definition.
func FuzzDecode(f *testing.F) {
	f.Add(fullDefBytes)
	f.Fuzz(func(t *testing.T, b []byte) {
		def, err := Decode("/d/zc.servicedef", b)
		if err != nil {
			return
		}
		enc, err := Encode(def)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode("/d/zc.servicedef", enc)
		if err != nil {
			t.Fatalf("re-encoded definition rejected: %v", err)
		}
		if !proto.Equal(def, again) {
			t.Fatalf("round trip changed the definition")
		}
		if enc2, _ := Encode(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not deterministic")
		}
		if _, err := InstanceID(def); err != nil {
			t.Fatalf("valid definition has no instance id: %v", err)
		}
	})
}
