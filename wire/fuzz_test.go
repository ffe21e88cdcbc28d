package wire

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

// FuzzDecodeHelloFrame feeds arbitrary bytes through the framing reader and the Frame and
// Hello decoders, as the serve loop does with an untrusted peer. It must never panic, and
// whatever decodes must re-encode and decode to the same message.
func FuzzDecodeHelloFrame(f *testing.F) {
	hello, _ := Marshal(helloVector())
	fr, _ := EncodeFrame(NewFrame(wirepb.FrameKind_REQUEST, ProtoControl, 1, hello))
	f.Add(fr)
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{1, 3, 0, 0, 0}, 0xA8, 0x01, 0x01))
	f.Fuzz(func(t *testing.T, in []byte) {
		frame, err := ReadFrame(bytes.NewReader(in), MaxFrameBody)
		if err != nil {
			return
		}
		var h wirepb.Hello
		if err := proto.Unmarshal(frame.Payload, &h); err != nil {
			return
		}
		b, err := Marshal(&h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var back wirepb.Hello
		if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(&h, &back) {
			t.Fatalf("round trip changed the Hello: %v", err)
		}
	})
}
