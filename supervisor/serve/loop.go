package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/internal/backoff"
	"github.com/rpbroker/broker/internal/ctxsleep"
	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Settings are the per-service handler settings of a loop. They are swapped atomically
// by ApplySettings, so a config change that keeps the socket keeps the listener and every
// open connection.
type Settings struct {
	Service      string // service served here; "*" serves any defined service
	MaxConns     int
	HelloTimeout time.Duration
	Router       Router
	// ImplicitDef lets a registered service work without a .servicedef file: a missing
	// file means private isolation and no version policy.
	ImplicitDef bool
}

// Defs is the servicedef view a loop reads on every Hello; it must not touch the disk.
type Defs interface {
	Lookup(service string) servicedef.Lookup
}

// Router finds or starts the backend for a validated Hello.
type Router interface {
	Route(ctx context.Context, req *Request) (Route, error)
}

// Request is a Hello that passed every check up to the version policy.
type Request struct {
	Frame    *wirepb.Frame
	Hello    *wirepb.Hello
	Def      *wirepb.ServiceDefinition
	Instance string
	Peer     Cred
}

// Route is where a negotiated client goes.
type Route struct {
	Pipe    string
	Version string // daemon_version reported to the client
	// Token is the one-time handoff token; it is sent only to clients that set
	// capability bit 0.
	Token []byte
	// Capabilities are extra server capability bits (ours); they are granted only with
	// Token, and only those the client set too.
	Capabilities uint64
	// AfterReply, when set, runs after Negotiated was written, owning conn (handoff).
	AfterReply func(ctx context.Context, conn *net.UnixConn, n *wirepb.Negotiated)
	// BeforeReply, when set, runs on the same goroutine just before the Negotiated that
	// AfterReply will follow is written, with its final fields: work that needs no reply
	// (encoding the handoff offer, taking a spare) leaves the path between Negotiated and
	// the handoff. AfterReply may not follow (the write can fail).
	BeforeReply func(ctx context.Context, n *wirepb.Negotiated)
}

// Admin answers admin verbs; it sees which loop the request arrived on.
type Admin interface {
	Serve(ctx context.Context, req *wirepb.AdminRequest) *wirepb.AdminReply
}

// Options build a Loop.
type Options struct {
	Listener *net.UnixListener
	Settings Settings
	Defs     Defs
	Admin    Admin
	Shared   *Shared
	Log      zerolog.Logger
	// OnShutdown is called once when an admin SHUTDOWN arrives.
	OnShutdown func()
}

// Loop serves one control socket. Run owns the accept loop and every connection
// goroutine; it returns after all of them have finished.
type Loop struct {
	ln       *net.UnixListener
	path     string
	settings atomic.Pointer[Settings]
	defs     Defs
	admin    Admin
	shared   *Shared
	log      zerolog.Logger
	shutdown func()
	euid     uint32

	open     atomic.Int64
	refusers atomic.Int64
	hold     hold // Hold and Release (an upgrade in place)
	// logs rate-limits the lines a flood would repeat: accept errors, refusals.
	logs *LogLimiter
}

// Log lines a flood repeats are written at most once per logEvery per kind, with a
// count; logKinds bounds the kinds tracked.
const (
	logEvery = time.Second
	logKinds = 64
)

// New builds a loop around an already bound listener (see Listen).
func New(o Options) *Loop {
	l := &Loop{
		ln:       o.Listener,
		path:     o.Listener.Addr().String(),
		defs:     o.Defs,
		admin:    o.Admin,
		shared:   o.Shared,
		log:      o.Log,
		shutdown: o.OnShutdown,
		euid:     uint32(os.Geteuid()),
		logs:     NewLogLimiter(logEvery, logKinds),
	}
	if l.shutdown == nil {
		l.shutdown = func() {}
	}
	s := o.Settings
	l.settings.Store(&s)
	return l
}

// Path is the socket path.
func (l *Loop) Path() string { return l.path }

// Settings returns the settings in force.
func (l *Loop) Settings() Settings { return *l.settings.Load() }

// ApplySettings swaps the handler settings; connections already open finish with the
// settings they started with.
func (l *Loop) ApplySettings(s Settings) { l.settings.Store(&s) }

// ConnectionsOpen counts connections open on this socket.
func (l *Loop) ConnectionsOpen() int64 { return l.open.Load() }

// Run accepts until ctx is cancelled, then closes the listener (removing the socket) and
// waits for every connection it started.
func (l *Loop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	defer l.ln.Close()
	defer l.stopped()

	retry := backoff.New(backoff.Policy{Initial: 5 * time.Millisecond, Max: time.Second})
	failed := 0 // accept errors in a row, reported once accepting works again
	for {
		conn, err := l.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Held (or a hold just released): the accept was woken by a deadline.
			if l.parkIfHeld(ctx) || errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			failed++
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: demote (Hellos get FD_PRESSURE) and give the process
				// a moment to release some before accepting again.
				l.shared.FD.AcceptFailed()
				if ok, n := l.logs.Allow("accept: "+err.Error(), time.Now()); ok {
					l.log.Warn().Err(err).Int("repeated", n).Msg("accept: out of file descriptors; demoted")
				}
				if !ctxsleep.Sleep(ctx, 10*time.Millisecond) {
					return nil
				}
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("control socket %s closed: %w", l.path, err)
			}
			// Unknown accept error: log, back off, keep serving.
			wait := retry.Next()
			if ok, n := l.logs.Allow("accept: "+err.Error(), time.Now()); ok {
				l.log.Error().Err(err).Str("backoff", logfield.Dur(wait)).Int("repeated", n).Msg("accept failed")
			}
			if !ctxsleep.Sleep(ctx, wait) {
				return nil
			}
			continue
		}
		if failed > 0 {
			l.log.Info().Int("failed_accepts", failed).Msg("accept recovered")
			failed = 0
			retry.Reset()
		}
		l.shared.FD.AcceptOK()
		s := l.settings.Load()
		if n := l.open.Add(1); s.MaxConns > 0 && n > int64(s.MaxConns) {
			l.open.Add(-1)
			l.refuseOverLimit(&wg, conn)
			continue
		}
		l.shared.open.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.shared.open.Add(-1)
			defer l.open.Add(-1)
			defer conn.Close()
			defer l.recovered("connection")
			growStack() // the Hello and handoff paths need 8 KiB: one cheap copy now (stack.go)
			l.serveConn(ctx, conn, s)
		}()
	}
}

// maxRefusers bounds the goroutines answering over-cap connections; past it, excess
// connections are answered at once on the accept loop and closed. Nothing queues
// without bound.
const maxRefusers = 64

// Deadlines of an over-cap refusal: a short read for the request (the reply echoes its
// request id, and a client blocked writing its Hello gets unblocked), then a write of
// its own, so a client that wrote nothing still receives the refusal.
const (
	overLimitRead   = 200 * time.Millisecond
	overLimitWrite  = time.Second
	overLimitInline = 50 * time.Millisecond // past maxRefusers, on the accept loop
)

// refuseOverLimit answers an over-cap connection with RATE_LIMITED. It reads the request
// first (briefly) so that a client blocked writing its Hello still gets to read the
// refusal, and so the reply can echo its request id.
func (l *Loop) refuseOverLimit(wg *sync.WaitGroup, conn *net.UnixConn) {
	if l.refusers.Add(1) > maxRefusers {
		// Too many refusals waiting for their requests: answer this one at once, without
		// the echo. A fresh socket's send buffer is empty, so the write does not block
		// the accept loop; the deadline only guards that.
		l.refusers.Add(-1)
		if l.peerAllowed(conn) {
			l.answerOverLimit(conn, nil, time.Now(), overLimitInline)
		}
		conn.Close()
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer l.refusers.Add(-1)
		defer conn.Close()
		defer l.recovered("connection")
		start := time.Now()
		if !l.peerAllowed(conn) {
			return
		}
		conn.SetReadDeadline(start.Add(overLimitRead))
		var req *wirepb.Frame
		if body, err := wire.ReadFrameBody(conn, wire.MaxHelloBody); err == nil {
			f := new(wirepb.Frame)
			if proto.Unmarshal(body, f) == nil {
				req = f
			}
		}
		l.answerOverLimit(conn, req, start, overLimitWrite)
	}()
}

// answerOverLimit writes the RATE_LIMITED refusal under its own write deadline, counts
// it and logs it (rate-limited).
func (l *Loop) answerOverLimit(conn *net.UnixConn, req *wirepb.Frame, start time.Time, write time.Duration) {
	conn.SetWriteDeadline(time.Now().Add(write))
	r := connLimitRefusal()
	l.writeRefusal(conn, req, r)
	l.refused(HelloOutcome{Code: r.Code, Reason: r.Reason, Duration: time.Since(start), Framing: true})
	if ok, n := l.logs.Allow("connection limit", time.Now()); ok {
		l.log.Warn().Str("event", "connection_limit").Int("repeated", n).Msg("connection limit reached; refused")
	}
}

// peerAllowed applies the same-euid rule: a foreign peer is dropped silently and logged.
func (l *Loop) peerAllowed(conn *net.UnixConn) bool {
	cred, err := PeerCred(conn)
	if err != nil || cred.UID != l.euid {
		l.dropPeer(cred, err)
		return false
	}
	return true
}
