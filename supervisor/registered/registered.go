// Package registered routes Hellos to a backend that runs on its own at a known endpoint.
// The backend is verified when first seen and whenever it was found dead; while it is
// down, Hellos are refused with BACKEND_SPAWN_FAILED and the endpoint is re-probed with a
// short backoff, so a backend started after the broker is noticed within a second.
package registered

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/backoff"
	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Verify modes: the values of the config's verify key, so the two never disagree.
const (
	VerifyProbe   = config.VerifyProbe   // v1 identity probe, checked against the real process
	VerifyConnect = config.VerifyConnect // endpoint accepts and its listener runs as our uid
)

// Options configure one registered backend.
type Options struct {
	Service  string
	Version  string
	Endpoint string
	Verify   string
	Instance string // registry instance id, e.g. private:<service>
	// HandoffEndpoint is the backend's handoff socket; empty disables handoff. When set,
	// clients that set capability bit 0 get a token, and their connection is passed to
	// the backend after Negotiated (only ever to the verified backend's pid). Bits 1 and 2
	// (ours) are granted as handoff.Grant says, once the backend has proven it relays.
	HandoffEndpoint string
	// Handoff tunes the dispatcher (spares, timeouts); Endpoint, ExpectPID and Log are
	// filled in here.
	Handoff  handoff.Options
	Registry *registry.Registry
	Hasher   *identity.Hasher
	Log      zerolog.Logger
	// MinBackoff and MaxBackoff bound the re-probe interval while the backend is down
	// (defaults 20ms and 500ms).
	MinBackoff, MaxBackoff time.Duration
}

// Backend tracks one registered backend. Run owns the probe loop; Route is safe to call
// from any connection goroutine.
type Backend struct {
	o    Options
	cur  atomic.Pointer[registry.Backend]
	kick chan struct{}
	disp *handoff.Dispatcher // nil without a handoff endpoint
	// probed is closed once the first probe has answered, whatever the answer, or Run
	// has returned: readiness (sd_notify READY=1) waits for it, never for a live backend.
	probed     chan struct{}
	probedOnce sync.Once
}

// Probed is closed once the first probe has answered (up or down) or Run has returned.
func (b *Backend) Probed() <-chan struct{} { return b.probed }

func (b *Backend) markProbed() { b.probedOnce.Do(func() { close(b.probed) }) }

// New returns a Backend; call Run to start verifying it.
func New(o Options) *Backend {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		// A backend started after the broker must be noticed within a second of its
		// endpoint appearing. A probe of an absent endpoint is one failed connect(2), so
		// two a second per backend that is down cost nothing worth a longer wait.
		o.MaxBackoff = 500 * time.Millisecond
	}
	if o.Verify == "" {
		o.Verify = VerifyProbe
	}
	if o.Hasher == nil {
		o.Hasher = &identity.Hasher{}
	}
	b := &Backend{o: o, kick: make(chan struct{}, 1), probed: make(chan struct{})}
	if o.HandoffEndpoint != "" {
		ho := o.Handoff
		ho.Endpoint = o.HandoffEndpoint
		ho.ExpectPID = b.verifiedPID
		ho.Log = o.Log.With().Str("handoff_endpoint", o.HandoffEndpoint).Logger()
		b.disp = handoff.New(ho)
	}
	return b
}

// verifiedPID is the pid a handoff peer must have: the verified backend's, else 0 (no
// fd leaves the broker). It asks no system call: Run's watch clears the backend as soon
// as its pidfd reports the exit, and a spare to a process that is gone fails its
// sendmsg, delivering nothing. A handoff asks this several times (grant, Prepare, send).
func (b *Backend) verifiedPID() int {
	if cur := b.cur.Load(); cur != nil {
		return cur.PID
	}
	return 0
}

// Dispatcher is the handoff dispatcher, nil when handoff is off.
func (b *Backend) Dispatcher() *handoff.Dispatcher { return b.disp }

// Current returns the verified live backend, or nil.
func (b *Backend) Current() *registry.Backend {
	cur := b.cur.Load()
	if cur == nil || !cur.Alive() {
		return nil
	}
	return cur
}

// Route answers a Hello with the backend endpoint when the backend is verified, alive and
// of the wanted version.
func (b *Backend) Route(ctx context.Context, req *serve.Request) (serve.Route, error) {
	// A Hello that arrives before the first probe has answered (the one that socket-
	// activated the broker) waits for it, at most the probe's 500ms, instead of being
	// refused while the backend may well be up.
	select {
	case <-b.probed:
	case <-ctx.Done():
	}
	cur := b.cur.Load()
	if cur == nil || !cur.Alive() {
		if cur != nil {
			b.nudge() // found dead on the Hello path: re-probe now, not at the next tick
		}
		return serve.Route{}, wire.Refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered, wire.RetryBackend)
	}
	if req.Hello.WantedVersion != b.o.Version {
		return serve.Route{}, wire.Refuse(wirepb.ErrorCode_ERROR_BACKEND_SPAWN_FAILED, wire.ReasonNotRegistered, wire.RetryBackend)
	}
	cur.Touch(time.Now())
	r := serve.Route{Pipe: b.o.Endpoint, Version: b.o.Version}
	// Token, early data (bit 1) and write-ahead (bit 2): handoff.Grant decides, from the
	// client's bits and what the dispatcher's spares proved.
	mode := handoff.ModeOff
	if b.disp != nil {
		mode = b.disp.Mode()
	}
	if g := handoff.Grant(req.Hello.ClientCapabilities, mode); g.Token {
		if tok := b.disp.Issue(); tok != nil {
			service := req.Hello.ServiceName
			r.Token, r.Capabilities = tok, g.Caps
			// Both run on the connection's goroutine, in turn: a spare is taken (and its
			// last exchange settled) before Negotiated goes out, so that only the offer's
			// encoding and the sendmsg follow it.
			var p *handoff.Prepared
			r.BeforeReply = func(ctx context.Context, n *wirepb.Negotiated) {
				p = b.disp.Prepare(ctx, handoff.RequestOf(n, service))
			}
			r.AfterReply = func(ctx context.Context, conn *net.UnixConn, n *wirepb.Negotiated) {
				// The slot stays held until the ack, or only until the sendmsg when the
				// spare's backend acks lazily (bounded by the ack timeout and the
				// dispatcher's in-flight cap).
				if p != nil {
					b.disp.HandoffPrepared(ctx, conn, p)
					return
				}
				b.disp.Handoff(ctx, conn, handoff.RequestOf(n, service))
			}
		}
	}
	return r, nil
}

func (b *Backend) nudge() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run verifies the backend, watches it while alive and re-probes with backoff while it
// is down. It returns when ctx is cancelled.
func (b *Backend) Run(ctx context.Context) error {
	log := b.o.Log
	defer b.clear()
	defer b.markProbed()
	if b.disp != nil {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { b.disp.Run(ctx) })
	}
	retry := backoff.New(backoff.Policy{Initial: b.o.MinBackoff, Max: b.o.MaxBackoff, Jitter: 0.1})
	var lastErr string
	for ctx.Err() == nil {
		be, err := b.verify(ctx)
		if err != nil {
			b.markProbed()
			wait := retry.Next()
			if msg := err.Error(); msg != lastErr {
				b.o.Registry.NoteError(registry.Target{Instance: b.o.Instance, Service: b.o.Service, Version: b.o.Version}, msg, time.Now())
				downEvent(log, err).Err(err).Str("endpoint", b.o.Endpoint).Str("retry_in", logfield.Dur(wait)).
					Msg("registered backend is not available; re-probing")
				lastErr = msg
			} else {
				log.Debug().Err(err).Str("retry_in", logfield.Dur(wait)).Msg("registered backend probe failed")
			}
			b.wait(ctx, wait)
			continue
		}
		retry.Reset()
		lastErr = ""
		b.cur.Store(be)
		b.o.Registry.Add(be)
		b.markProbed()
		if b.disp != nil {
			b.disp.Kick() // dial spares to the newly verified backend now
		}
		log.Info().Int("pid", be.PID).Str("endpoint", b.o.Endpoint).Str("version", b.o.Version).
			Str("event", "backend_up").Msg("registered backend verified")
		b.watch(ctx, be)
		b.clear()
		if ctx.Err() == nil {
			log.Info().Int("pid", be.PID).Str("endpoint", b.o.Endpoint).Str("event", "backend_down").Msg("registered backend exited")
		}
	}
	return nil
}

// downEvent picks the level of a new probe failure: a backend that is not running (the
// endpoint is absent or refuses) is the ordinary state of a registered backend between
// runs, at info; anything else (a foreign user's listener, a wrong identity, no answer)
// is a misconfiguration or a sick backend, at warn.
func downEvent(log zerolog.Logger, err error) *zerolog.Event {
	if errors.Is(err, identity.ErrUnreachable) {
		return log.Info()
	}
	return log.Warn()
}

func (b *Backend) clear() {
	if cur := b.cur.Swap(nil); cur != nil {
		b.o.Registry.Remove(cur)
		if p := cur.Proc(); p != nil {
			p.Close()
		}
	}
}

// watch returns when the backend process exits or ctx ends.
func (b *Backend) watch(ctx context.Context, be *registry.Backend) {
	for ctx.Err() == nil {
		if be.Proc().Wait(100) {
			return
		}
	}
}

func (b *Backend) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-b.kick:
	}
}
