package serve

import (
	"context"
	"net"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
	"google.golang.org/protobuf/proto"
)

// serveAdmin answers one admin verb; an invalid admin frame is closed without reply.
func (l *Loop) serveAdmin(ctx context.Context, conn net.Conn, f *wirepb.Frame) {
	req := new(wirepb.AdminRequest)
	if f.EnvelopeVersion != wire.ProtocolVersion || f.Kind != wirepb.FrameKind_REQUEST ||
		f.PayloadEncoding != wirepb.PayloadEncoding_NONE || proto.Unmarshal(f.Payload, req) != nil {
		l.debugLimited("invalid admin frame; closed without reply")
		return
	}
	var reply *wirepb.AdminReply
	if l.admin != nil {
		if l.guard("admin", func() { reply = l.admin.Serve(ctx, req) }) {
			return
		}
	} else {
		reply = &wirepb.AdminReply{Body: "unsupported admin verb\n", ExitCode: 2, ContentType: "text/plain"}
	}
	payload, err := wire.Marshal(reply)
	if err != nil {
		return
	}
	if err := wire.WriteFrame(conn, wire.ReplyFrame(f, wire.ProtoAdmin, payload)); err != nil {
		l.log.Debug().Err(err).Msg("write admin reply; peer gone")
		return
	}
	if req.Verb == wirepb.AdminVerb_SHUTDOWN {
		l.log.Info().Str("verb", "shutdown").Msg("admin shutdown requested")
		l.shutdown()
	}
}
