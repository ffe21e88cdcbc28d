package supervisor

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/backoff"
	"github.com/rpbroker/broker/internal/ctxsleep"
	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/internal/task"
	"github.com/rpbroker/broker/supervisor/registered"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/names"
)

// runner owns one service: its serve loop (bound with retry and backoff) and, for a
// registered service, the backend verifier. Its goroutines stop when stop is called.
type runner struct {
	svc      config.Service
	log      zerolog.Logger
	settings atomic.Pointer[serve.Settings]
	loop     atomic.Pointer[serve.Loop]

	task    *task.Task  // the serve goroutine
	backend *backendRun // registered backend verifier, or nil
	// bindErr is why the socket is not bound while the serve goroutine retries, for status.
	bindErr atomic.Pointer[string]
	// runtimeDir is where the runner may create its socket's directory when rebinding
	// (runtime_dir needs a restart, so it never changes under a runner).
	runtimeDir string
}

// backendRun is one registered.Backend with the goroutine that runs it.
type backendRun struct {
	b    *registered.Backend
	task *task.Task
}

func (b *backendRun) stop() {
	if b != nil {
		b.task.Stop()
	}
}

// startRunner starts the goroutine that serves svc on ln, or binds svc.Socket itself
// when ln is nil.
func (s *Supervisor) startRunner(svc config.Service, ln *net.UnixListener) *runner {
	r := &runner{svc: svc, log: s.log.With().Str("service", svc.Name).Logger(), runtimeDir: s.cfg.Broker.RuntimeDir}
	r.backend = s.startBackend(svc, r.log)
	set := s.settingsFor(svc, r.backend)
	r.settings.Store(&set)
	r.task = task.Go(s.ctx, func(ctx context.Context) error { s.serve(ctx, r, svc, ln); return nil })
	s.board.track(r)
	return r
}

// serve runs the loop on ln (when not nil) and, whenever it has no listener, binds the
// socket, retrying with backoff, until ctx ends. svc is this goroutine's own copy: the
// socket of a runner never changes.
func (s *Supervisor) serve(ctx context.Context, r *runner, svc config.Service, ln *net.UnixListener) {
	if ln != nil && ctx.Err() != nil {
		ln.Close()
		return
	}
	// Permanent bind errors are refused before a runner starts (at start and on reload);
	// what is left here is transient (EMFILE, ENOMEM), or a socket removed from under us
	// whose path is now taken.
	retry := backoff.New(backoff.Policy{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.1, ResetAfter: time.Minute})
	for ctx.Err() == nil {
		var err error
		if ln == nil {
			ln, err = bindSocket(svc.Socket, r.runtimeDir)
		}
		if err != nil {
			msg := err.Error()
			r.bindErr.Store(&msg)
			wait := retry.Next()
			r.log.Error().Err(err).Str("retry_in", logfield.Dur(wait)).Str("socket", svc.Socket).
				Msg("cannot bind control socket; other services keep serving")
			s.metrics.loopFailures.WithLabelValues(svc.Name).Inc()
			if !ctxsleep.Sleep(ctx, wait) {
				return
			}
			continue
		}
		loop := serve.New(serve.Options{
			Listener:   ln,
			Settings:   *r.settings.Load(),
			Defs:       s.defs,
			Admin:      s.adminFor(svc, svc.Socket),
			Shared:     s.shared,
			Log:        r.log,
			OnShutdown: s.requestShutdown,
		})
		r.loop.Store(loop)
		r.bindErr.Store(nil)
		r.log.Info().Str("socket", svc.Socket).Str("mode", svc.Mode).Msg("serving")
		err = runWatched(ctx, loop, ln, svc.Socket, socketCheckEvery)
		ln = nil
		r.loop.Store(nil)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSocketGone) {
			r.log.Warn().Err(err).Str("socket", svc.Socket).Msg("control socket removed from under the broker; rebinding")
			continue
		}
		r.log.Error().Err(err).Msg("serve loop stopped; rebinding")
		s.metrics.loopFailures.WithLabelValues(svc.Name).Inc()
	}
}

// apply swaps in new handler settings without touching the listener.
func (r *runner) apply(set serve.Settings) {
	r.settings.Store(&set)
	if l := r.loop.Load(); l != nil {
		l.ApplySettings(set)
	}
}

// stop cancels the loop and the backend verifier and waits for both, up to timeout; a
// loop still running then is reported, not waited for forever.
func (r *runner) stop(timeout time.Duration) bool {
	ok := r.task.StopWithin(timeout)
	if !ok {
		r.log.Error().Stringer("waited", timeout).Msg("serve loop did not stop in time")
	}
	r.backend.stop()
	return ok
}

func (s *Supervisor) startBackend(svc config.Service, log zerolog.Logger) *backendRun {
	if svc.Mode != config.ModeRegistered {
		return nil
	}
	b := registered.New(registered.Options{
		Service:  svc.Name,
		Version:  svc.Version,
		Endpoint: svc.BackendEndpoint,
		Verify:   svc.Verify,
		Instance: names.PrivateInstance(svc.Name),
		// Handoff is wired by the registered backend: it issues tokens only when set.
		HandoffEndpoint: svc.HandoffEndpoint,
		Registry:        s.registry,
		Hasher:          s.hasher,
		Log:             log,
	})
	return &backendRun{b: b, task: task.Go(s.ctx, b.Run)}
}

func (s *Supervisor) settingsFor(svc config.Service, b *backendRun) serve.Settings {
	set := serve.Settings{
		Service:      svc.Name,
		MaxConns:     svc.MaxConnections,
		HelloTimeout: s.cfg.Broker.HelloTimeout,
		ImplicitDef:  svc.Mode == config.ModeRegistered,
	}
	if b != nil {
		set.Router = b.b
	} else {
		set.Router = s.launchRouter(svc)
	}
	return set
}
