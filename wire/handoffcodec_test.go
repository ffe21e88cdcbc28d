package wire

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

// ext is a raw extension field as the handoff package appends them (numbers 16 to 19).
func ext(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

var token16 = bytes.Repeat([]byte{0xAB}, 16)

func TestAppendMatchesProtoMarshal(t *testing.T) {
	acks := []*Ack{
		{},
		{Token: token16, Accepted: true, CorrelationID: 7},
		{Token: token16, Detail: "offer token does not match the passed token", CorrelationID: 1 << 40},
		{Token: token16, Accepted: true, CorrelationID: 9, Unknown: append(ext(16, 1), ext(17, 1)...)},
	}
	for i, a := range acks {
		m := &wirepb.HandoffAck{Token: a.Token, Accepted: a.Accepted, ErrorDetail: a.Detail, CorrelationId: a.CorrelationID}
		m.ProtoReflect().SetUnknown(a.Unknown)
		want, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendAck(nil, a); !bytes.Equal(got, want) {
			t.Errorf("ack %d: AppendAck = % x, proto.Marshal = % x", i, got, want)
		}
	}
	offers := []*Offer{
		{},
		{Token: token16, Service: "zccache", CorrelationID: 42},
		{HandleValue: 3, Token: token16, Service: "svc", CorrelationID: 1, Unknown: append(ext(16, 99), ext(18, 1)...)},
	}
	for i, o := range offers {
		m := &wirepb.HandoffOffer{HandleValue: o.HandleValue, Token: o.Token, ServiceName: o.Service, CorrelationId: o.CorrelationID}
		m.ProtoReflect().SetUnknown(o.Unknown)
		want, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if o.HandleValue == 0 {
			want = append([]byte{0x08, 0x00}, want...) // written explicitly, as v1 does
		}
		if got := AppendOffer(nil, o); !bytes.Equal(got, want) {
			t.Errorf("offer %d: AppendOffer = % x, want % x", i, got, want)
		}
	}
	frames := []struct {
		kind     wirepb.FrameKind
		protocol uint32
		id       uint64
		payload  []byte
	}{
		{wirepb.FrameKind_REQUEST, ProtoHandoff, 5, []byte{1, 2, 3}},
		{wirepb.FrameKind_EVENT, ProtoHandoff, 0, nil},
		{wirepb.FrameKind_RESPONSE, ProtoControl, 1 << 63, bytes.Repeat([]byte{9}, 300)},
	}
	for i, f := range frames {
		want, err := EncodeFrame(NewFrame(f.kind, f.protocol, f.id, f.payload))
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("keep")
		got := AppendEnvelope(prefix, f.kind, f.protocol, f.id, f.payload)
		if !bytes.Equal(got[:4], []byte("keep")) || !bytes.Equal(got[4:], want) {
			t.Errorf("frame %d: AppendEnvelope = % x, EncodeFrame = % x", i, got, want)
		}
	}
}

func TestParseAgreesWithProto(t *testing.T) {
	inputs := [][]byte{
		nil,
		AppendAck(nil, &Ack{Token: token16, Accepted: true, CorrelationID: 3, Unknown: ext(17, 1)}),
		AppendOffer(nil, &Offer{Token: token16, Service: "svc", CorrelationID: 3, Unknown: ext(16, 3)}),
		{0x08, 0x01, 0x08, 0x00},                         // the last of a repeated scalar wins
		{0x0A, 0x01, 0x41, 0x0A, 0x01, 0x42},             // bytes too
		{0x10, 0x02},                                     // bool encoded as 2
		{0x12, 0x01, 0x01},                               // field 2 with the wrong wire type: unknown
		{0x1A, 0x01, 0xFF},                               // invalid UTF-8 in field 3
		{0x0A, 0x05, 0x01},                               // truncated bytes
		{0x00, 0x01},                                     // field number 0
		{0x83, 0x01, 0x84, 0x01},                         // an unknown group (field 16)
		{0x84, 0x01},                                     // a stray end-group
		{0xF8, 0xFF, 0xFF, 0xFF, 0x0F, 0x01},             // the largest field number
		{0x25, 1, 2, 3, 4, 0x29, 1, 2, 3, 4, 5, 6, 7, 8}, // fixed32 and fixed64 unknowns
		{0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},       // 10-byte varint
		{0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, // overlong
	}
	for i, in := range inputs {
		checkCodec(t, i, in)
	}
}

// FuzzHandoffCodec checks the hand-written decoders against protobuf-go on arbitrary
// bytes: the same accept or reject, the same fields, the same unknown bytes, and for
// accepted input the encoders reproduce what proto.Marshal makes of the decoded message.
func FuzzHandoffCodec(f *testing.F) {
	f.Add(AppendAck(nil, &Ack{Token: token16, Accepted: true, CorrelationID: 3, Unknown: ext(17, 1)}))
	f.Add(AppendOffer(nil, &Offer{Token: token16, Service: "svc", CorrelationID: 3, Unknown: ext(16, 3)}))
	f.Add(AppendEnvelope(nil, wirepb.FrameKind_EVENT, ProtoHandoff, 9, []byte{1})[HeaderLen:])
	f.Fuzz(func(t *testing.T, in []byte) { checkCodec(t, 0, in) })
}

func checkCodec(t *testing.T, i int, in []byte) {
	t.Helper()
	var pa wirepb.HandoffAck
	perr := proto.Unmarshal(in, &pa)
	a, err := ParseAck(in)
	switch {
	case (err == nil) != (perr == nil):
		t.Fatalf("input %d % x: ParseAck err %v, proto.Unmarshal err %v", i, in, err, perr)
	case err == nil:
		if !bytes.Equal(a.Token, pa.Token) || a.Accepted != pa.Accepted || a.Detail != pa.ErrorDetail ||
			a.CorrelationID != pa.CorrelationId || !bytes.Equal(a.Unknown, pa.ProtoReflect().GetUnknown()) {
			t.Fatalf("input %d % x: ParseAck %+v, proto %v", i, in, a, &pa)
		}
		want, _ := Marshal(&pa)
		if got := AppendAck(nil, &a); !bytes.Equal(got, want) {
			t.Fatalf("input %d: AppendAck = % x, proto.Marshal = % x", i, got, want)
		}
	}
	var po wirepb.HandoffOffer
	perr = proto.Unmarshal(in, &po)
	o, err := ParseOffer(in)
	switch {
	case (err == nil) != (perr == nil):
		t.Fatalf("input %d % x: ParseOffer err %v, proto.Unmarshal err %v", i, in, err, perr)
	case err == nil:
		if o.HandleValue != po.HandleValue || !bytes.Equal(o.Token, po.Token) || o.Service != po.ServiceName ||
			o.CorrelationID != po.CorrelationId || !bytes.Equal(o.Unknown, po.ProtoReflect().GetUnknown()) {
			t.Fatalf("input %d % x: ParseOffer %+v, proto %v", i, in, o, &po)
		}
	}
	var pf wirepb.Frame
	perr = proto.Unmarshal(in, &pf)
	e, err := ParseEnvelope(in)
	switch {
	case (err == nil) != (perr == nil):
		t.Fatalf("input %d % x: ParseEnvelope err %v, proto.Unmarshal err %v", i, in, err, perr)
	case err == nil:
		if e.Version != pf.EnvelopeVersion || e.Kind != pf.Kind || e.Protocol != pf.PayloadProtocol ||
			!bytes.Equal(e.Payload, pf.Payload) || e.RequestID != pf.RequestId || e.Encoding != pf.PayloadEncoding {
			t.Fatalf("input %d % x: ParseEnvelope %+v, proto %v", i, in, e, &pf)
		}
	}
}
