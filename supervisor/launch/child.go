package launch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Why a child was stopped; the first reason set wins and picks the DIED_* event.
const (
	stopNone int32 = iota
	stopFailed
	stopIdle
	stopShutdown
	stopUnreachable // its service left the configuration
)

// outputDrain is how long output readers keep reading after the child was reaped: a
// grandchild that inherited the pipes must not keep a reader (and Run) alive forever.
const outputDrain = time.Second

// child is one started backend process.
type child struct {
	cmd      *exec.Cmd
	key      registry.Key // instance, service, version and the hash of the resolved binary
	endpoint string
	idle     time.Duration
	started  time.Time
	err      error // start failure, set on the starter thread
	pid      int
	outs     []*os.File // read ends of stdout and stderr

	exited chan struct{} // closed after the child was reaped and cleaned up
	status string        // exit status, set before exited closes
	// ctx ends after exited closes or when the Manager stops: it cuts a probe short.
	ctx    context.Context
	cancel context.CancelFunc

	reason   atomic.Int32
	failWhy  atomic.Pointer[string] // why a failed spawn was stopped
	lastUsed atomic.Int64           // unix ns of the last routed Hello; -1 once an idle stop claimed it

	mu   sync.Mutex
	dead bool              // exited; the pid is not signalled any more
	be   *registry.Backend // published entry once verified
}

// touch records a routed Hello; false means an idle stop has already claimed the child.
func (c *child) touch(now time.Time) bool {
	for {
		v := c.lastUsed.Load()
		if v < 0 {
			return false
		}
		if c.lastUsed.CompareAndSwap(v, now.UnixNano()) {
			return true
		}
	}
}

// signal sends sig to the child's process group (its own session). The pid stays a
// zombie until dead is set (the reaper waits with WNOWAIT first), so it cannot have been
// recycled while the lock is held.
func (c *child) signal(sig unix.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.pid <= 0 {
		return
	}
	if err := unix.Kill(-c.pid, sig); err != nil {
		_ = unix.Kill(c.pid, sig)
	}
}

// verified reports whether the child answered the identity probe and was published.
func (c *child) verified() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.be != nil
}

func (c *child) info() BackendInfo {
	c.mu.Lock()
	be, dead := c.be, c.dead
	c.mu.Unlock()
	state := "starting"
	switch {
	case dead || c.reason.Load() != stopNone || c.lastUsed.Load() < 0:
		state = "stopping"
	case be != nil:
		state = "running"
	}
	info := BackendInfo{
		PID: c.pid, Instance: c.key.Instance, Service: c.key.Service, Version: c.key.Version,
		Endpoint: c.endpoint, State: state, Started: c.started,
	}
	if be != nil {
		info.LastHello = be.LastHello()
	}
	return info
}

func sortInfos(s []BackendInfo) {
	slices.SortFunc(s, func(a, b BackendInfo) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		if c := strings.Compare(a.Version, b.Version); c != 0 {
			return c
		}
		return a.Started.Compare(b.Started)
	})
}

// reap waits for the child, unpublishes it the moment it exits, collects it (no zombie)
// and emits its DIED_* event.
func (m *Manager) reap(c *child) {
	waitExit(c.pid)
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	m.unready(c)

	err := c.cmd.Wait()
	c.status = exitStatus(c.cmd, err)
	_ = os.Remove(c.endpoint)
	m.mu.Lock()
	delete(m.children, c)
	m.mu.Unlock()
	for _, f := range c.outs {
		_ = f.SetReadDeadline(time.Now().Add(outputDrain))
	}

	e := Event{Kind: wirepb.EventKind_DIED_CRASH, PID: c.pid, Instance: c.key.Instance,
		Service: c.key.Service, Version: c.key.Version, Status: c.status}
	switch c.reason.Load() {
	case stopIdle:
		e.Kind, e.Reason = wirepb.EventKind_DIED_IDLE, "idle for "+c.idle.String()
		m.forgive(c.key)
	case stopShutdown:
		e.Kind, e.Reason = wirepb.EventKind_DIED_SHUTDOWN, "broker shutdown"
	case stopUnreachable:
		e.Kind, e.Reason = wirepb.EventKind_DIED_SHUTDOWN, "service no longer configured"
		m.forgive(c.key)
	case stopFailed:
		e.Reason = *c.failWhy.Load()
	default:
		e.Reason = "backend exited before ready"
		if c.verified() {
			e.Reason = "backend exited unexpectedly"
		}
	}
	// A crash (an exit the broker did not ask for) is a warning; a stop it chose is not.
	lvl := zerolog.InfoLevel
	if e.Kind == wirepb.EventKind_DIED_CRASH {
		lvl = zerolog.WarnLevel
	}
	m.o.Log.WithLevel(lvl).Int("pid", c.pid).Str("service", e.Service).Str("version", e.Version).
		Str("status", e.Status).Str("event", e.Kind.String()).Msg(e.Reason)
	m.emit(e)
	close(c.exited)
	c.cancel()
}

// unready withdraws the child from the registry and the warm path.
func (m *Manager) unready(c *child) {
	c.mu.Lock()
	be := c.be
	c.mu.Unlock()
	if be == nil {
		return
	}
	m.o.Registry.Remove(be)
	m.mu.Lock()
	if m.ready[c.key] == c {
		delete(m.ready, c.key)
	}
	m.mu.Unlock()
}

// stop ends the child: SIGTERM to its process group, Grace, SIGKILL. It returns once the
// child has been reaped. At shutdown a child still starting is killed at once: it has no
// client to drain, and its Hellos are already answered SHUTTING_DOWN.
func (m *Manager) stop(c *child, why int32) {
	c.reason.CompareAndSwap(stopNone, why)
	m.unready(c)
	if why == stopShutdown && !c.verified() {
		c.signal(unix.SIGKILL)
		<-c.exited
		return
	}
	c.signal(unix.SIGTERM)
	t := time.NewTimer(m.o.Grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	m.o.Log.Warn().Int("pid", c.pid).Str("service", c.key.Service).Str("grace", logfield.Dur(m.o.Grace)).
		Msg("backend ignored SIGTERM; sending SIGKILL")
	c.signal(unix.SIGKILL)
	<-c.exited
}

// watchIdle stops the child once no Hello was routed to it for its idle timeout.
func (m *Manager) watchIdle(c *child) {
	t := time.NewTimer(c.idle)
	defer t.Stop()
	for {
		select {
		case <-c.exited:
			return
		case <-t.C:
		}
		for {
			last := c.lastUsed.Load()
			if last < 0 {
				return
			}
			if left := time.Duration(last + int64(c.idle) - time.Now().UnixNano()); left > 0 {
				t.Reset(left)
				break
			}
			if c.lastUsed.CompareAndSwap(last, -1) {
				m.stop(c, stopIdle)
				return
			}
		}
	}
}

// waitExit blocks until pid has exited, leaving it waitable (WNOWAIT).
func waitExit(pid int) {
	var info unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
			return
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) string {
	if cmd.ProcessState != nil {
		return cmd.ProcessState.String()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	if err != nil {
		return err.Error()
	}
	return "unknown"
}
