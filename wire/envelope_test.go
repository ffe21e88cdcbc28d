package wire

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

func envelopeVector() *wirepb.Frame {
	return &wirepb.Frame{
		EnvelopeVersion: 1, Kind: wirepb.FrameKind_REQUEST, PayloadProtocol: ProtoAdmin, RequestId: 77,
		PayloadEncoding: wirepb.PayloadEncoding_ZSTD, DeadlineUnixMs: 12345,
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Tracestate: "vendor=1",
	}
}

func TestReadFrameCapped(t *testing.T) {
	big := envelopeVector()
	big.Payload = make([]byte, 3*streamBuf+7)
	bigBody, err := Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	// Envelope fields after the payload: deterministic Marshal puts the payload (4)
	// before request_id (5) and the trace strings (8, 9).
	if i := bytes.Index(bigBody, big.Payload); i < 0 || i > 20 {
		t.Fatalf("payload at %d; want it before the echoed fields", i)
	}
	longTrace := envelopeVector()
	longTrace.Payload = make([]byte, 100)
	longTrace.Tracestate = strings.Repeat("t", 64)
	badUTF8 := append(AppendFrame(nil, bigBody), 0x4a, 1, 0xff) // tracestate "\xff"
	badUTF8[1] += 3
	const keep = 64
	for _, tc := range []struct {
		name    string
		in      []byte
		maxBody uint32
		want    error // nil: the body is returned whole
		env     *wirepb.Frame
	}{
		{"within keep", AppendFrame(nil, []byte{8, 1}), MaxFrameBody, nil, nil},
		{"over keep, envelope decoded", AppendFrame(nil, bigBody), MaxFrameBody, ErrTooLarge, envelopeVector()},
		{"trace string over keep dropped", frameOf(t, longTrace), MaxFrameBody, ErrTooLarge, func() *wirepb.Frame {
			f := envelopeVector()
			f.Tracestate = "" // traceparent (55) fits the 64-byte budget, then tracestate does not
			return f
		}()},
		{"over keep, cut short", AppendFrame(nil, bigBody)[:HeaderLen+len(bigBody)-1], MaxFrameBody, ErrBodyEOF, nil},
		{"over keep, garbage", AppendFrame(nil, bytes.Repeat([]byte{0xff}, 200)), MaxFrameBody, ErrMalformed, nil},
		{"over keep, garbage cut short", AppendFrame(nil, bytes.Repeat([]byte{0xff}, 200))[:150], MaxFrameBody, ErrBodyEOF, nil},
		{"over keep, invalid UTF-8 string", badUTF8, MaxFrameBody, ErrMalformed, nil},
		{"over max", []byte{1, 0, 1, 0, 0}, 100, ErrTooLarge, nil},
		{"framing byte", []byte{2, 0, 0, 0, 0}, MaxFrameBody, ErrFramingVersion, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, env, err := ReadFrameCapped(bytes.NewReader(tc.in), tc.maxBody, keep)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (body != nil) {
				t.Fatalf("err = %v (body %d bytes), want %v", err, len(body), tc.want)
			}
			if (tc.env == nil) != (env == nil) || (env != nil && !proto.Equal(env, tc.env)) {
				t.Fatalf("envelope %v, want %v", env, tc.env)
			}
			var fe *FrameError
			if tc.env != nil && (!errors.As(err, &fe) || fe.Cap != keep || int(fe.Declared) != len(tc.in)-HeaderLen) {
				t.Fatalf("detail %+v", fe)
			}
		})
	}
}

func frameOf(t *testing.T, f *wirepb.Frame) []byte {
	t.Helper()
	b, err := EncodeFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Reading a 4 MiB frame over the keep cap allocates the read buffer, not the body.
func TestReadFrameCappedHoldsNoPayload(t *testing.T) {
	f := envelopeVector()
	f.Payload = make([]byte, 4<<20)
	in := frameOf(t, f)
	// TotalAlloc is process-wide: other goroutines (the runtime, a test running in
	// parallel) may allocate meanwhile, so the least of a few reads is this read's cost.
	least := uint64(1 << 62)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, env, err := ReadFrameCapped(bytes.NewReader(in), MaxFrameBody, MaxHelloBody)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) || env.GetRequestId() != 77 {
			t.Fatalf("%v %v", env, err)
		}
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	if least > 2*streamBuf {
		t.Fatalf("allocated %d bytes for a 4 MiB frame; want at most %d", least, 2*streamBuf)
	}
}

// FuzzEnvelopeMatchesUnmarshal: decoding a body as it streams agrees with proto.Unmarshal
// of the whole body on validity and on every envelope field, and any cut of the body
// reports ErrBodyEOF.
func FuzzEnvelopeMatchesUnmarshal(f *testing.F) {
	v := envelopeVector()
	v.Payload = []byte("payload")
	b, _ := Marshal(v)
	f.Add(b, uint(3))
	f.Add([]byte{0xff, 0xff}, uint(1))
	f.Add(protowire.AppendTag(nil, 8, protowire.StartGroupType), uint(0))
	f.Add(append(protowire.AppendTag(protowire.AppendTag(nil, 8, protowire.StartGroupType), 5, protowire.VarintType), 1), uint(0))
	f.Add(protowire.AppendTag(nil, 3, protowire.EndGroupType), uint(0))
	f.Add(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), uint(0))
	f.Fuzz(func(t *testing.T, body []byte, cut uint) {
		env, err := streamEnvelope(bytes.NewReader(body), int64(len(body)), len(body))
		want := new(wirepb.Frame)
		uerr := proto.Unmarshal(body, want)
		if (uerr != nil) != errors.Is(err, ErrMalformed) || (uerr == nil && err != nil) {
			t.Fatalf("unmarshal err %v, stream err %v", uerr, err)
		}
		if uerr == nil {
			want.Payload = nil
			want.ProtoReflect().SetUnknown(nil)
			if !proto.Equal(env, want) {
				t.Fatalf("stream %v, unmarshal %v", env, want)
			}
		}
		if len(body) > 0 {
			k := int(cut % uint(len(body)))
			if _, err := streamEnvelope(bytes.NewReader(body[:k]), int64(len(body)), len(body)); !errors.Is(err, ErrBodyEOF) {
				t.Fatalf("body cut at %d of %d: %v", k, len(body), err)
			}
		}
	})
}
