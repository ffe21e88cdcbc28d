package serve

import (
	"context"
	"errors"
	"net"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	// maxAdminBody caps an admin request frame (ours): admin requests carry a verb, a
	// service name and at most an output path, so 8 KiB leaves room for a PATH_MAX path.
	maxAdminBody         = 8 << 10
	defaultKeepaliveSecs = 1800
	maxClientVersion     = 128
	maxClientLib         = 64

	// Reasons for peers dropped without a reply (ours: logs and metrics only).
	reasonForeignPeer = "peer runs as another user; dropped without reply"
	reasonNoPeerCred  = "peer credentials unavailable; connection dropped"
)

// serveConn handles one connection: one frame in, one reply out (docs/protocol.md, "A control connection").
func (l *Loop) serveConn(ctx context.Context, conn *net.UnixConn, s *Settings) {
	cred, err := PeerCred(conn)
	if err != nil || cred.UID != l.euid {
		l.dropPeer(cred, err)
		return
	}
	start := time.Now()
	timeout := s.HelloTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	conn.SetDeadline(start.Add(timeout))

	// Never more than the Hello cap of a body in memory: a longer one is decoded as it
	// streams in, for the correlation fields its refusal echoes, and its payload dropped.
	body, env, err := wire.ReadFrameCapped(conn, wire.MaxFrameBody, wire.MaxHelloBody)
	if env != nil && env.PayloadProtocol == wire.ProtoAdmin {
		l.debugLimited("admin frame over the admin cap; closed without reply")
		return
	}
	if err != nil {
		// Best effort: the deadline may have passed, so give the small reply its own.
		conn.SetWriteDeadline(time.Now().Add(250 * time.Millisecond))
		r := readRefusal(err)
		l.writeRefusal(conn, env, r)
		l.refused(HelloOutcome{Code: r.Code, Reason: r.Reason, Duration: time.Since(start), Framing: env == nil})
		return
	}
	frame := new(wirepb.Frame)
	if err := proto.Unmarshal(body, frame); err != nil {
		r := wire.Refuse(wirepb.ErrorCode_ERROR_PEER_REJECTED, wire.ReasonMalformedFrame, 0)
		l.writeRefusal(conn, nil, r)
		l.refused(HelloOutcome{Code: r.Code, Reason: r.Reason, Duration: time.Since(start), Framing: true})
		return
	}
	if frame.PayloadProtocol == wire.ProtoAdmin {
		if len(body) > maxAdminBody {
			l.debugLimited("admin frame over the admin cap; closed without reply")
			return
		}
		l.serveAdmin(ctx, conn, frame)
		return
	}
	hello, route, ref := l.dispatchHello(ctx, frame, cred, s)
	out := HelloOutcome{Duration: time.Since(start)}
	if hello != nil {
		out.Service, out.Version, out.RequestID = hello.ServiceName, hello.WantedVersion, hello.RequestId
	}
	if ref != nil {
		out.Code, out.Reason = ref.Code, ref.Reason
		l.writeRefusal(conn, frame, *ref)
		l.refused(out)
		return
	}
	n := &wirepb.Negotiated{
		NegotiatedProtocol:    wire.ProtocolVersion,
		DaemonVersion:         route.Version,
		BackendPipe:           route.Pipe,
		KeepaliveIntervalSecs: hello.ClientKeepaliveSecs,
		ConnectionId:          l.shared.NextConnectionID(),
	}
	if n.KeepaliveIntervalSecs == 0 {
		n.KeepaliveIntervalSecs = defaultKeepaliveSecs
	}
	if len(route.Token) > 0 && hello.ClientCapabilities&wire.CapHandlePassing != 0 {
		n.ServerCapabilities = wire.CapHandlePassing | route.Capabilities&hello.ClientCapabilities
		n.HandlePassedToken = route.Token
	}
	out.ConnectionID = n.ConnectionId
	if route.BeforeReply != nil && route.AfterReply != nil && n.HandlePassedToken != nil &&
		l.guard("route", func() { route.BeforeReply(ctx, n) }) {
		r := panicRefusal()
		out.Code, out.Reason = r.Code, r.Reason
		l.writeRefusal(conn, frame, *r)
		l.refused(out)
		return
	}
	err = l.writeReply(conn, frame, &wirepb.HelloReply{Result: &wirepb.HelloReply_Negotiated{Negotiated: n}})
	out.Duration = time.Since(start)
	l.shared.Observer.HelloDone(out)
	if err == nil && route.AfterReply != nil && n.HandlePassedToken != nil {
		l.guard("route", func() { route.AfterReply(ctx, conn, n) })
	}
}

// dropPeer drops a peer that is not our user (or whose credentials are unavailable)
// without a reply. It is counted as a PEER_REJECTED refusal and logged at most once a
// second, so a foreign user cannot flood the log.
func (l *Loop) dropPeer(cred Cred, err error) {
	reason := reasonForeignPeer
	if err != nil {
		reason = reasonNoPeerCred
	}
	l.shared.Observer.HelloDone(HelloOutcome{Code: wirepb.ErrorCode_ERROR_PEER_REJECTED, Reason: reason, Framing: true})
	ok, n := l.logs.Allow(reason, time.Now())
	if !ok {
		return
	}
	ev := l.log.Warn().Str("event", "peer_rejected").Int("repeated", n)
	if err != nil {
		ev.Err(err).Msg(reason)
		return
	}
	ev.Int32("peer_pid", cred.PID).Uint32("peer_uid", cred.UID).Msg(reason)
}

// readRefusal maps a framing failure to its v1 refusal.
func readRefusal(err error) wire.Refusal {
	switch {
	case errors.Is(err, wire.ErrFramingVersion):
		return wire.Refuse(wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED, wire.ReasonFramingVersion, 0)
	case errors.Is(err, wire.ErrTooLarge):
		return wire.Refuse(wirepb.ErrorCode_ERROR_PEER_REJECTED, wire.ReasonHelloTooLarge, 0)
	case errors.Is(err, wire.ErrMalformed):
		return wire.Refuse(wirepb.ErrorCode_ERROR_PEER_REJECTED, wire.ReasonMalformedFrame, 0)
	default:
		return wire.Refuse(wirepb.ErrorCode_ERROR_PEER_REJECTED, wire.ReasonIncompleteHello, 0)
	}
}

func peerRejected(reason string) *wire.Refusal {
	r := wire.Refuse(wirepb.ErrorCode_ERROR_PEER_REJECTED, reason, 0)
	return &r
}

func refusal(code wirepb.ErrorCode, reason string, retry uint64) *wire.Refusal {
	r := wire.Refuse(code, reason, retry)
	return &r
}

func connLimitRefusal() wire.Refusal {
	return wire.Refuse(wirepb.ErrorCode_ERROR_RATE_LIMITED, wire.ReasonConnLimit, wire.RetryConnLimitMin)
}

// dispatchHello applies the checks of docs/protocol.md, "The dispatch order", in order. It returns the decoded
// Hello (nil before step 7) and either a route or the refusal to send.
// (Step 4.1, the Hello size cap, is applied while the frame is read.)
func (l *Loop) dispatchHello(ctx context.Context, f *wirepb.Frame, cred Cred, s *Settings) (*wirepb.Hello, Route, *wire.Refusal) {
	switch {
	case l.shared.FD.Demoted():
		return nil, Route{}, refusal(wirepb.ErrorCode_ERROR_FD_PRESSURE, wire.ReasonFDPressure, wire.RetryFDPressure)
	case f.EnvelopeVersion != wire.ProtocolVersion:
		return nil, Route{}, refusal(wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED, wire.ReasonEnvelopeVersion, 0)
	case f.Kind != wirepb.FrameKind_REQUEST:
		return nil, Route{}, peerRejected(wire.ReasonKindNotRequest)
	case f.PayloadProtocol != wire.ProtoControl:
		return nil, Route{}, peerRejected(wire.ReasonNotControlPlane)
	case f.PayloadEncoding != wirepb.PayloadEncoding_NONE:
		return nil, Route{}, peerRejected(wire.ReasonCompressed)
	}
	h := new(wirepb.Hello)
	if err := proto.Unmarshal(f.Payload, h); err != nil {
		return nil, Route{}, peerRejected(wire.ReasonMalformedHello)
	}
	switch {
	case h.ClientMinProtocol > wire.ProtocolVersion || h.ClientMaxProtocol < wire.ProtocolVersion:
		return h, Route{}, refusal(wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED, wire.ReasonProtocolRange, 0)
	case !names.ValidService(h.ServiceName):
		return h, Route{}, peerRejected(wire.ReasonServiceName)
	case !names.ValidVersion(h.WantedVersion):
		return h, Route{}, peerRejected(wire.ReasonWantedVersion)
	case len(h.ClientVersion) > maxClientVersion:
		return h, Route{}, peerRejected(wire.ReasonClientVersion)
	case len(h.ClientLibName) > maxClientLib || len(h.ClientLibVersion) > maxClientLib:
		return h, Route{}, peerRejected(wire.ReasonClientLib)
	case h.PeerPid != 0 && cred.PID != 0 && int32(h.PeerPid) != cred.PID:
		return h, Route{}, peerRejected(wire.ReasonPeerPID)
	}
	if ok, retry := l.shared.limiter.Load().Allow(cred.PID); !ok {
		return h, Route{}, refusal(wirepb.ErrorCode_ERROR_RATE_LIMITED, wire.ReasonHelloRateLimit, uint64(retry.Milliseconds()))
	}
	if l.shared.Draining() {
		return h, Route{}, refusal(wirepb.ErrorCode_ERROR_SHUTTING_DOWN, wire.ReasonShuttingDown, 0)
	}
	def, ref := l.lookupDef(h.ServiceName, s)
	if ref != nil {
		return h, Route{}, ref
	}
	if ref := servicedef.CheckVersionPolicy(def, h.WantedVersion); ref != nil {
		return h, Route{}, ref
	}
	inst, err := servicedef.InstanceID(def)
	if err != nil {
		return h, Route{}, refusal(wirepb.ErrorCode_ERROR_INTERNAL, wire.ReasonIsolation+err.Error(), 0)
	}
	if s.Router == nil {
		return h, Route{}, refusal(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered, wire.RetryBackend)
	}
	l.shared.helloBegin()
	defer l.shared.helloEnd()
	var route Route
	if l.guard("route", func() {
		route, err = s.Router.Route(ctx, &Request{Frame: f, Hello: h, Def: def, Instance: inst, Peer: cred})
	}) {
		return h, Route{}, panicRefusal()
	}
	if err != nil {
		var r wire.Refusal
		if !errors.As(err, &r) {
			r = wire.Refuse(wirepb.ErrorCode_ERROR_INTERNAL, err.Error(), 0)
		}
		return h, Route{}, &r
	}
	return h, route, nil
}

// lookupDef reads the servicedef snapshot (no disk). A registered service with no
// servicedef file gets a permissive private definition (ours): broker.toml already names
// its backend, so a file adds only optional policy. That holds also while the directory
// cannot be read (Err set, no file of its own found): a registered service never depends
// on the servicedef directory. Its own broken file still refuses it.
func (l *Loop) lookupDef(service string, s *Settings) (*wirepb.ServiceDefinition, *wire.Refusal) {
	lk := l.defs.Lookup(service)
	if lk.Def == nil && !lk.Found && s.ImplicitDef && s.Service == service {
		return &wirepb.ServiceDefinition{ServiceName: service}, nil
	}
	if r := lk.Refusal(); r != nil {
		return nil, r
	}
	if s.Service != "*" && s.Service != service {
		return nil, refusal(wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN, wire.ReasonServiceNotServed, 0)
	}
	return lk.Def, nil
}

func (l *Loop) writeRefusal(conn net.Conn, req *wirepb.Frame, r wire.Refusal) {
	l.writeReply(conn, req, &wirepb.HelloReply{Result: &wirepb.HelloReply_Refused{Refused: r.Proto()}})
}

func (l *Loop) writeReply(conn net.Conn, req *wirepb.Frame, reply proto.Message) error {
	payload, err := wire.Marshal(reply)
	if err != nil {
		l.log.Error().Err(err).Msg("encode reply")
		return err
	}
	if err := wire.WriteFrame(conn, wire.ReplyFrame(req, wire.ProtoControl, payload)); err != nil {
		l.log.Debug().Err(err).Msg("write reply; peer gone")
		return err
	}
	return nil
}
