package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

// vec builds bytes from a readable spec: hex bytes and "quoted" ASCII runs.
func vec(t *testing.T, spec string) []byte {
	t.Helper()
	var out []byte
	for len(spec) > 0 {
		spec = strings.TrimLeft(spec, " \n\t")
		if spec == "" {
			break
		}
		if spec[0] == '"' {
			end := strings.IndexByte(spec[1:], '"')
			out = append(out, spec[1:end+1]...)
			spec = spec[end+2:]
			continue
		}
		b, err := hex.DecodeString(spec[:2])
		if err != nil {
			t.Fatalf("bad vector near %q", spec)
		}
		out = append(out, b...)
		spec = spec[2:]
	}
	return out
}

func helloVector() *wirepb.Hello {
	return &wirepb.Hello{
		ClientMinProtocol:    1,
		ClientMaxProtocol:    3,
		ServiceName:          "build-cache",
		WantedVersion:        "1.2.3-rc.1",
		ClientVersion:        "3.0.15",
		ClientCapabilities:   0x8000000000000001,
		AuthToken:            []byte{1, 2, 3},
		RequestId:            "req-0001",
		PeerPid:              4242,
		ClientLibName:        "running-process",
		ClientLibVersion:     "3.0.15",
		PeerAttestationNonce: []byte{0xAA, 0xBB},
		CapabilityToken:      []byte{0xCC},
		ClientKeepaliveSecs:  30,
	}
}

func TestVectors(t *testing.T) {
	token := make([]byte, 16)
	for i := range token {
		token[i] = byte(i)
	}
	for _, tc := range []struct {
		name  string
		msg   proto.Message
		bytes string
	}{
		{"hello", helloVector(), `08 01 10 03 1A 0B "build-cache" 22 0A "1.2.3-rc.1" 2A 06 "3.0.15"
			30 81 80 80 80 80 80 80 80 80 01 3A 03 01 02 03 42 08 "req-0001" 50 92 21
			5A 0F "running-process" 62 06 "3.0.15" 6A 02 AA BB 72 01 CC 78 1E`},
		{"refused", &wirepb.Refused{Reason: "version below floor", DaemonMinProtocol: 2, DaemonMaxProtocol: 3,
			Code: wirepb.ErrorCode_ERROR_VERSION_BLOCKED, Details: map[string]string{"floor": "2"}, RetryAfterMs: 1500},
			`0A 13 "version below floor" 10 02 18 03 20 08 2A 0A 0A 05 "floor" 12 01 "2" 30 DC 0B`},
		{"handoff-ack", &wirepb.HandoffAck{Token: token, Accepted: true, ErrorDetail: "ok", CorrelationId: 7},
			`0A 10 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 01 1A 02 6F 6B 20 07`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := vec(t, tc.bytes)
			got, err := Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode:\n got %x\nwant %x", got, want)
			}
			back := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(want, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(back, tc.msg) {
				t.Fatalf("decode mismatch: %v", back)
			}
		})
	}
}

func TestHelloVectorFrameAndUnknownField(t *testing.T) {
	body, err := Marshal(helloVector())
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != 100 {
		t.Fatalf("hello body %d bytes, want 100", len(body))
	}
	framed := AppendFrame(nil, body)
	if !bytes.Equal(framed[:HeaderLen], []byte{0x01, 0x64, 0, 0, 0}) {
		t.Fatalf("header %x", framed[:HeaderLen])
	}
	got, err := ReadFrameBody(bytes.NewReader(framed), MaxHelloBody)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back: %v", err)
	}
	var h wirepb.Hello
	if err := proto.Unmarshal(append(body, 0xA8, 0x01, 0x01), &h); err != nil {
		t.Fatalf("unknown field 21 must be tolerated: %v", err)
	}
	if h.ServiceName != "build-cache" || h.ClientKeepaliveSecs != 30 {
		t.Fatalf("decoded %v", &h)
	}
}

func TestEmptyFrame(t *testing.T) {
	b, err := EncodeFrame(&wirepb.Frame{})
	if err != nil || !bytes.Equal(b, []byte{1, 0, 0, 0, 0}) {
		t.Fatalf("empty frame = %x, %v", b, err)
	}
	f, err := ReadFrame(bytes.NewReader(b), MaxFrameBody)
	if err != nil || !proto.Equal(f, &wirepb.Frame{}) {
		t.Fatalf("decode empty: %v %v", f, err)
	}
}

// failReader fails the test if more than limit bytes are read: proves the cap is checked
// before the body is read or allocated.
type failReader struct {
	r     io.Reader
	limit int
	t     *testing.T
}

func (f *failReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.limit -= n
	if f.limit < 0 {
		f.t.Fatalf("read past the header of an over-cap frame")
	}
	return n, err
}

func TestReadFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		cap  uint32
		want error
	}{
		{"bad framing byte", []byte{0x02, 0, 0, 0, 0}, MaxFrameBody, ErrFramingVersion},
		{"over frame cap", []byte{0x01, 0x01, 0x00, 0x00, 0x01}, MaxFrameBody, ErrTooLarge},
		{"over hello cap", []byte{0x01, 0x01, 0x00, 0x01, 0x00}, MaxHelloBody, ErrTooLarge},
		{"empty", nil, MaxFrameBody, ErrHeaderEOF},
		{"short header", []byte{0x01, 0x05}, MaxFrameBody, ErrHeaderEOF},
		{"short body", []byte{0x01, 0x05, 0, 0, 0, 0x08}, MaxFrameBody, ErrBodyEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrameBody(&failReader{r: bytes.NewReader(tc.in), limit: max(len(tc.in), HeaderLen), t: t}, tc.cap)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// Exactly the cap is legal.
	in := AppendFrame(nil, make([]byte, MaxHelloBody))
	if _, err := ReadFrameBody(bytes.NewReader(in), MaxHelloBody); err != nil {
		t.Fatalf("body of exactly the cap: %v", err)
	}
	var fe *FrameError
	_, err := ReadFrameBody(bytes.NewReader([]byte{0x01, 0x01, 0x00, 0x00, 0x01}), MaxFrameBody)
	if !errors.As(err, &fe) || fe.Declared != MaxFrameBody+1 || !strings.Contains(err.Error(), "16777217") {
		t.Fatalf("too-large detail: %v", err)
	}
}

func TestReplyFrameEchoes(t *testing.T) {
	req := &wirepb.Frame{RequestId: 9, Traceparent: "00-abc-def-01", Tracestate: "k=v"}
	f := ReplyFrame(req, ProtoAdmin, []byte{1})
	if f.RequestId != 9 || f.Traceparent != req.Traceparent || f.Tracestate != req.Tracestate ||
		f.Kind != wirepb.FrameKind_RESPONSE || f.EnvelopeVersion != 1 || f.PayloadProtocol != ProtoAdmin {
		t.Fatalf("reply %v", f)
	}
	if f := ReplyFrame(nil, ProtoControl, nil); f.RequestId != 0 || f.Traceparent != "" {
		t.Fatalf("reply without request %v", f)
	}
}
