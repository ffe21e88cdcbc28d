package serve

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

type echoAdmin struct{}

func (echoAdmin) Serve(_ context.Context, r *wirepb.AdminRequest) *wirepb.AdminReply {
	return &wirepb.AdminReply{Body: r.Verb.String() + "\n", ContentType: "text/plain"}
}

func TestAdminFrames(t *testing.T) {
	shut := make(chan struct{}, 1)
	h := startLoop(t, Settings{Service: "zc"}, mapDefs{}, nil, func(l *Loop) {
		l.admin = echoAdmin{}
		l.shutdown = func() { shut <- struct{}{} }
	})
	adminFrame := func(mut func(*wirepb.Frame)) []byte {
		f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, 5, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_HEALTHZ})
		if err != nil {
			t.Fatal(err)
		}
		mut(f)
		return frameBytes(t, f)
	}
	// A valid admin frame is answered even under fd pressure, echoing the request id.
	h.shared.FD.SetHighUsage(true)
	f, err := h.roundTrip(adminFrame(func(*wirepb.Frame) {}))
	if err != nil || f.PayloadProtocol != wire.ProtoAdmin || f.RequestId != 5 || f.Kind != wirepb.FrameKind_RESPONSE {
		t.Fatalf("admin reply %v, %v", f, err)
	}
	h.shared.FD.SetHighUsage(false)

	for name, raw := range map[string][]byte{
		"kind event":      adminFrame(func(f *wirepb.Frame) { f.Kind = wirepb.FrameKind_EVENT }),
		"envelope 2":      adminFrame(func(f *wirepb.Frame) { f.EnvelopeVersion = 2 }),
		"garbage payload": adminFrame(func(f *wirepb.Frame) { f.Payload = []byte{0xff} }),
	} {
		if _, err := h.roundTrip(raw); !errors.Is(err, io.EOF) {
			t.Errorf("%s: want close without reply, got %v", name, err)
		}
	}

	f, err = h.roundTrip(func() []byte {
		fr, _ := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, 6, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_SHUTDOWN})
		return frameBytes(t, fr)
	}())
	if err != nil || f.RequestId != 6 {
		t.Fatalf("shutdown reply: %v %v", f, err)
	}
	<-shut // the loop reported the shutdown request after replying
}

// TestAdminFrameCap: an admin request over the admin cap is closed without reply, also
// when it is over the Hello cap and streamed; one within it is answered.
func TestAdminFrameCap(t *testing.T) {
	h := startLoop(t, Settings{Service: "zc"}, mapDefs{}, nil, func(l *Loop) { l.admin = echoAdmin{} })
	admin := func(pathLen int) []byte {
		f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, 5,
			&wirepb.AdminRequest{Verb: wirepb.AdminVerb_DUMP, OutputPath: "/" + strings.Repeat("p", pathLen-1)})
		if err != nil {
			t.Fatal(err)
		}
		return frameBytes(t, f)
	}
	if f, err := h.roundTrip(admin(4096)); err != nil || f.RequestId != 5 {
		t.Fatalf("a PATH_MAX output path must fit: %v %v", f, err)
	}
	for _, n := range []int{maxAdminBody, wire.MaxHelloBody + 1} {
		if f, err := h.roundTrip(admin(n)); !errors.Is(err, io.EOF) {
			t.Errorf("admin frame with a %d-byte path: want close without reply, got %v %v", n, f, err)
		}
	}
}
