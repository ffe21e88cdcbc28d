package supervisor

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/preflight"
	"github.com/rpbroker/broker/supervisor/serve"
)

// StartError is why the broker refused to start: the config as written cannot be served.
// Every problem names its service or key, the path and the reason; `broker check` reports
// the same ones.
type StartError struct {
	Config   string
	Problems []error
}

func (e *StartError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return fmt.Sprintf("%s cannot be served, nothing started: %s", e.Config, strings.Join(lines, "; "))
}

func (e *StartError) Unwrap() []error { return e.Problems }

// bindAll runs on the Run goroutine before anything is served: the start-up checks
// (preflight.Check, the ones `broker check` runs), then the directories the broker may
// create, then every control socket. A permanent failure closes what was bound and
// returns a *StartError, so the broker exits with nothing served (all or nothing, like
// nginx). A transient bind error (out of descriptors or memory) leaves the service out of
// the map: its runner retries with backoff, and status shows "binding: <error>".
func (s *Supervisor) bindAll(cfg *config.Config) (map[string]*net.UnixListener, error) {
	fail := func(errs []error) error { return &StartError{Config: cfg.Path, Problems: errs} }
	probs := preflight.Check(cfg, preflight.Options{Inherited: func(p string) bool { return s.inherited[p] != nil }})
	if len(probs) > 0 {
		errs := make([]error, len(probs))
		for i, p := range probs {
			errs[i] = p
		}
		return nil, fail(errs)
	}
	rt := cfg.Broker.RuntimeDir
	if err := preflight.Ensure(rt, rt); err != nil {
		return nil, fail([]error{fmt.Errorf("runtime_dir: %w", err)})
	}
	bound := make(map[string]*net.UnixListener, len(cfg.Services))
	for _, svc := range cfg.Services {
		ln, err := s.listen(svc.Socket, rt)
		if err != nil && preflight.Transient(err) {
			s.log.Warn().Err(err).Str("service", svc.Name).Str("socket", svc.Socket).
				Msg("cannot bind control socket yet (transient); retrying with backoff")
			continue
		}
		if err != nil {
			for _, l := range bound {
				l.Close()
			}
			return nil, fail([]error{fmt.Errorf("service %q: %w", svc.Name, err)})
		}
		bound[svc.Name] = ln
	}
	return bound, nil
}

// listen binds a control socket on the Run goroutine: the listener handed over for path
// (socket activation; used once, never unlinked), else a new one in a directory the
// broker may create (preflight.Ensure).
func (s *Supervisor) listen(path, runtimeDir string) (*net.UnixListener, error) {
	if ln := s.inherited[path]; ln != nil {
		delete(s.inherited, path)
		// One handed over by an upgrade in place that an earlier image bound is ours.
		ln.SetUnlinkOnClose(!s.unowned[path])
		return ln, nil
	}
	return bindSocket(path, runtimeDir)
}

// bindSocket is serve.Listen after creating the socket's directory when allowed.
func bindSocket(path, runtimeDir string) (*net.UnixListener, error) {
	if err := preflight.Ensure(filepath.Dir(path), runtimeDir); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return serve.Listen(path)
}

// startedSockets is the "broker started" line's list: service=socket, in config order.
func startedSockets(cfg *config.Config) []string {
	out := make([]string, len(cfg.Services))
	for i, svc := range cfg.Services {
		out[i] = svc.Name + "=" + svc.Socket
	}
	return out
}
