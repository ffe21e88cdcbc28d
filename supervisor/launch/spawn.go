package launch

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// bindAttempts bounds the retries after a random endpoint name collided.
const bindAttempts = 4

// listenBacklog lets probes and early clients queue before the child accepts.
const listenBacklog = 512

// spawnError is a failed spawn; its text is the "why" of BACKEND_SPAWN_FAILED.
type spawnError struct{ why string }

func (e *spawnError) Error() string { return e.why }

func spawnFailed(format string, a ...any) error {
	return &spawnError{why: fmt.Sprintf(format, a...)}
}

// spawn starts one backend for key from bin, waits until it answers the identity probe
// as the process we started, and publishes it. It runs on a Manager goroutine.
func (m *Manager) spawn(req *serve.Request, bin string, key registry.Key, s Settings) (serve.Route, error) {
	if err := serve.PrepareDir(m.o.Layout.Dir); err != nil {
		return serve.Route{}, spawnFailed("%v", err)
	}
	endpoint, lnFile, err := bindBackend(m.o.Layout)
	if err != nil {
		return serve.Route{}, spawnFailed("%v", err)
	}
	var pipes [2][2]*os.File // [stdout, stderr][read, write]
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(lnFile, pipes[0][0], pipes[0][1])
			os.Remove(endpoint)
			return serve.Route{}, spawnFailed("output pipe: %v", err)
		}
		pipes[i] = [2]*os.File{r, w}
	}
	c := &child{
		cmd: &exec.Cmd{
			Path:       bin,
			Args:       []string{bin},
			Env:        m.childEnv(req, endpoint),
			Stdout:     pipes[0][1],
			Stderr:     pipes[1][1],
			ExtraFiles: []*os.File{lnFile}, // fd 3
			SysProcAttr: &syscall.SysProcAttr{
				Setsid:    true,
				Pdeathsig: syscall.SIGTERM,
			},
		},
		key:      key,
		endpoint: endpoint,
		idle:     s.IdleTimeout,
		outs:     []*os.File{pipes[0][0], pipes[1][0]},
		exited:   make(chan struct{}),
	}
	err = m.startChild(c)
	// The child holds its own copies now; the broker's must not leak into later children.
	closeAll(lnFile, pipes[0][1], pipes[1][1])
	if err != nil {
		closeAll(pipes[0][0], pipes[1][0])
		os.Remove(endpoint)
		m.emit(Event{Kind: wirepb.EventKind_SPAWN_ATTEMPT, Instance: key.Instance, Service: key.Service,
			Version: key.Version, Reason: err.Error()})
		if errors.Is(err, errClosing) {
			return serve.Route{}, err
		}
		return serve.Route{}, spawnFailed("start %s: %v", bin, err)
	}
	log := m.o.Log.With().Str("service", key.Service).Str("version", key.Version).Int("pid", c.pid).Logger()
	for i, stream := range []string{"stdout", "stderr"} {
		m.wg.Go(func() {
			defer c.outs[i].Close()
			captureLines(c.outs[i], log.With().Str("stream", stream).Logger(), m.outRate)
		})
	}
	m.wg.Go(func() { m.reap(c) })
	m.emit(Event{Kind: wirepb.EventKind_SPAWN_ATTEMPT, Time: c.started, PID: c.pid, Instance: key.Instance,
		Service: key.Service, Version: key.Version})

	dp, err := m.awaitReady(c, s.startTimeout())
	if err == nil {
		err = m.publish(c, dp)
	}
	if errors.Is(err, errClosing) {
		return serve.Route{}, err // Run stops the child with the others
	}
	if err != nil {
		m.fail(c, err.Error()) // logged by the Router with the other spawn failures
		return serve.Route{}, err
	}
	log.Info().Str("endpoint", endpoint).Str("event", "SPAWN").Str("took", logfield.Dur(time.Since(c.started))).Msg("backend ready")
	m.emit(Event{Kind: wirepb.EventKind_SPAWN, PID: c.pid, Instance: key.Instance, Service: key.Service, Version: key.Version})
	return serve.Route{Pipe: endpoint, Version: key.Version}, nil
}

// publish records the verified child in the registry and on the warm path, unless it
// has already exited; it starts the idle watcher.
func (m *Manager) publish(c *child, dp *wirepb.DaemonProcess) error {
	rk := c.key
	copy(rk.ExeHash[:], dp.GetExeHash())
	if rk.ExeHash != c.key.ExeHash {
		m.o.Log.Warn().Str("service", rk.Service).Int("pid", c.pid).
			Msg("backend binary changed between hashing and start; registered under the running image's hash")
	}
	be := registry.NewBackend(rk, c.endpoint, nil, "launch")
	be.PID = c.pid
	be.Started = c.started
	be.Touch(time.Now())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		// The reaper has the status; it is set before exited closes.
		c.mu.Unlock()
		<-c.exited
		c.mu.Lock()
		return spawnFailed("backend exited before ready: %s", c.status)
	}
	if m.runCtx.Err() != nil {
		// Shutdown may already have killed this child as one still starting.
		return errClosing
	}
	if c.reason.Load() == stopUnreachable {
		return spawnFailed("service no longer configured")
	}
	c.be = be
	m.o.Registry.Add(be)
	m.mu.Lock()
	m.ready[c.key] = c
	m.mu.Unlock()
	if c.idle > 0 {
		// Added while the child is alive: the reaper still counts in wg, so Run has not
		// reached wg.Wait.
		m.wg.Go(func() { m.watchIdle(c) })
	}
	return nil
}

// fail stops a child whose spawn failed, in the background so the refusal is not held
// back by the grace period.
func (m *Manager) fail(c *child, why string) {
	c.failWhy.Store(&why)
	c.reason.CompareAndSwap(stopNone, stopFailed)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dead {
		m.wg.Go(func() { m.stop(c, stopFailed) })
	}
}

// bindBackend binds a fresh backend socket <dir>/rpb-v1-{sid}-be-{32 hex}.sock, mode
// 0600, and returns it as a listening file for the child. A name collision (practically
// never: 128 random bits) retries with a new name.
func bindBackend(l names.Layout) (string, *os.File, error) {
	for range bindAttempts {
		var rnd [16]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", nil, fmt.Errorf("backend endpoint: %w", err)
		}
		path, err := l.Path(l.BackendLeaf(hex.EncodeToString(rnd[:])))
		if err != nil {
			return "", nil, fmt.Errorf("backend endpoint: %w", err)
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return "", nil, fmt.Errorf("backend endpoint: socket: %w", err)
		}
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
		if errors.Is(err, unix.EADDRINUSE) {
			unix.Close(fd)
			continue
		}
		if err == nil {
			// The 0700 directory closes the window between bind and chmod.
			err = os.Chmod(path, 0o600)
		}
		if err == nil {
			err = unix.Listen(fd, listenBacklog)
		}
		if err != nil {
			unix.Close(fd)
			os.Remove(path)
			return "", nil, fmt.Errorf("backend endpoint %s: %w", path, err)
		}
		return path, os.NewFile(uintptr(fd), path), nil
	}
	return "", nil, fmt.Errorf("backend endpoint: %d random names in %s were all taken", bindAttempts, l.Dir)
}

// childEnv is the user baseline without any broker variables it may carry (a broker
// started by a broker), plus the v1 launch environment.
func (m *Manager) childEnv(req *serve.Request, endpoint string) []string {
	env := make([]string, 0, len(m.o.Environ)+9)
	for _, kv := range m.o.Environ {
		if strings.HasPrefix(kv, "RUNNING_PROCESS_BROKER_") || strings.HasPrefix(kv, wire.EnvIsDaemon+"=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		wire.EnvServiceName+"="+req.Hello.GetServiceName(),
		wire.EnvServiceVersion+"="+req.Hello.GetWantedVersion(),
		wire.EnvBackendPipe+"="+endpoint,
		wire.EnvNamespace+"="+req.Instance,
		wire.EnvInstance+"="+req.Instance,
		wire.EnvListenerFD+"=3",
		wire.EnvIsDaemon+"=1",
	)
	if tp := req.Frame.GetTraceparent(); tp != "" {
		env = append(env, wire.EnvTraceparent+"="+tp)
	}
	if ts := req.Frame.GetTracestate(); ts != "" {
		env = append(env, wire.EnvTracestate+"="+ts)
	}
	return env
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
