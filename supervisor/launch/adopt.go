package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Handed is one launched child as an upgrade hands it to the next image: after the
// execve it is still this process's child.
type Handed struct {
	PID      int
	Binary   string
	Endpoint string
	// Key carries the executable hash the child was verified with.
	Key      registry.Key
	Idle     time.Duration
	Started  time.Time
	LastUsed time.Time
	// Pidfd (optional) names the child; Adopt checks it names PID and closes it.
	Pidfd *os.File
	// Stdout and Stderr are the read ends of the child's output pipes (nil when none).
	// From Handover they are the Manager's own, still being read: keep duplicates. To
	// Adopt they are handed over: the Manager reads and closes them.
	Stdout, Stderr *os.File
	// Stop is why the child was being stopped when it was handed over ("idle",
	// "unreachable", "failed" or "exited"); "" for a running or starting one. Adopt
	// finishes the stop instead of verifying the child.
	Stop string
}

// stopNames maps a stop reason to Handed.Stop and back.
var stopNames = map[int32]string{stopIdle: "idle", stopUnreachable: "unreachable", stopFailed: "failed",
	stopShutdown: "failed"}

// Budget is one key's spawn budget in its current window.
type Budget struct {
	Key      registry.Key
	Window   time.Time
	Attempts int
}

// Handover lists every unreaped child and the spawn budgets, for an upgrade to hand to
// the next image: after the exec they are still this process's children, and nobody but
// the next image can reap them. A child still starting is handed over too (the next image
// re-probes it); the Hellos waiting for it must have been answered before the exec.
func (m *Manager) Handover() ([]Handed, []Budget) {
	m.mu.Lock()
	all := make([]*child, 0, len(m.children))
	for c := range m.children {
		all = append(all, c)
	}
	var budgets []Budget
	now := m.o.Now()
	for k, s := range m.slots {
		if s.attempts > 0 && now.Sub(s.window) < budgetWindow {
			budgets = append(budgets, Budget{Key: k, Window: s.window, Attempts: s.attempts})
		}
	}
	m.mu.Unlock()
	var out []Handed
	for _, c := range all {
		c.mu.Lock()
		be, dead := c.be, c.dead
		c.mu.Unlock()
		h := Handed{PID: c.pid, Binary: c.cmd.Path, Endpoint: c.endpoint, Key: c.key, Idle: c.idle,
			Started: c.started, LastUsed: time.Unix(0, max(c.lastUsed.Load(), 0))}
		if be != nil {
			h.Key = be.Key // the hash the running image answered with
		}
		switch r := c.reason.Load(); {
		case dead:
			h.Stop = "exited"
		case r != stopNone:
			h.Stop = stopNames[r]
		case c.lastUsed.Load() < 0:
			h.Stop = "idle" // an idle stop has claimed it
		}
		if len(c.outs) == 2 {
			h.Stdout, h.Stderr = c.outs[0], c.outs[1]
		}
		out = append(out, h)
	}
	return out, budgets
}

// Adoption is what an upgrade hands to the new image's Manager (Options.Adopt): the
// children the previous image started, still this process's children after the exec, and
// its spawn budgets.
type Adoption struct {
	Children []Handed
	Budgets  []Budget
	// Timeout bounds each child's re-verification; 0 means DefaultStartTimeout.
	Timeout time.Duration
	// Done, when set, learns how many children were adopted and why the others were not
	// (one error each), before any Hello is routed.
	Done func(adopted int, err error)
}

// adoptAll supervises the handed children as if this Manager had started them: reaped
// (DIED_* events), idle-stopped, stopped at shutdown, respawned within the budget. Each is
// re-verified with the identity probe before it is published; one that does not answer
// as the process it was is stopped. Run calls it before it starts routing, so no Hello
// spawns a duplicate of a child still being verified.
func (m *Manager) adoptAll(a *Adoption) {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	m.mu.Lock()
	for _, b := range a.Budgets {
		if _, ok := m.slots[b.Key]; !ok {
			m.slots[b.Key] = &slot{window: b.Window, attempts: min(b.Attempts, budgetAttempts)}
		}
	}
	m.mu.Unlock()
	errs := make([]error, len(a.Children))
	var wg sync.WaitGroup
	for i, h := range a.Children {
		wg.Go(func() {
			if err := m.adopt(h, timeout); err != nil {
				errs[i] = fmt.Errorf("adopt backend pid %d (%s %s): %w", h.PID, h.Key.Service, h.Key.Version, err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	if a.Done != nil {
		a.Done(n, errors.Join(errs...))
	}
}

func (m *Manager) adopt(h Handed, timeout time.Duration) error {
	outs := []*os.File{h.Stdout, h.Stderr}
	if h.Pidfd != nil {
		err := pidfdNames(h.Pidfd, h.PID)
		h.Pidfd.Close()
		if err != nil {
			closeAll(outs...)
			return err
		}
	}
	if err := isChild(h.PID); err != nil {
		closeAll(outs...)
		return err
	}
	p, err := os.FindProcess(h.PID)
	if err != nil {
		closeAll(outs...)
		return fmt.Errorf("find process: %w", err)
	}
	c := &child{
		cmd:      &exec.Cmd{Path: h.Binary, Args: []string{h.Binary}, Process: p},
		key:      h.Key,
		endpoint: h.Endpoint,
		idle:     h.Idle,
		pid:      h.PID,
		started:  h.Started,
		exited:   make(chan struct{}),
	}
	for _, f := range outs {
		if f != nil {
			c.outs = append(c.outs, f)
		}
	}
	c.lastUsed.Store(h.LastUsed.UnixNano())
	stop := stopNone
	for r, name := range stopNames {
		if name == h.Stop && r != stopShutdown {
			stop = r
		}
	}
	if h.Stop != "" && stop == stopNone {
		stop = stopFailed // "exited", or a reason this image does not know
	}
	if stop == stopFailed {
		why := "being stopped when the broker upgraded"
		if h.Stop == "exited" {
			why = "exited while the broker upgraded"
		}
		c.failWhy.Store(&why)
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		closeAll(c.outs...)
		// Ours to end: nobody else will reap it.
		c.signal(unix.SIGKILL)
		_, _ = p.Wait()
		return errClosing
	}
	c.ctx, c.cancel = context.WithCancel(m.runCtx)
	m.children[c] = struct{}{}
	// Under m.mu with closing unset: Run has not reached wg.Wait.
	log := m.o.Log.With().Str("service", c.key.Service).Str("version", c.key.Version).Int("pid", c.pid).Logger()
	for i, f := range c.outs {
		m.wg.Go(func() {
			defer f.Close()
			captureLines(f, log.With().Str("stream", [...]string{"stdout", "stderr"}[i]).Logger(), m.outRate)
		})
	}
	m.wg.Go(func() { m.reap(c) })
	if stop != stopNone {
		m.wg.Go(func() { m.stop(c, stop) })
	}
	m.mu.Unlock()
	if stop != stopNone {
		return nil
	}

	dp, err := m.awaitReady(c, timeout)
	if err == nil {
		err = m.publish(c, dp)
	}
	if errors.Is(err, errClosing) {
		return err // Run stops the child with the others
	}
	if err != nil {
		why := "not re-verified after an upgrade: " + err.Error()
		m.fail(c, why)
		return errors.New(why)
	}
	log.Info().Str("endpoint", c.endpoint).Str("event", "SPAWN").Msg("backend adopted after an upgrade")
	m.emit(Event{Kind: wirepb.EventKind_SPAWN, PID: c.pid, Instance: c.key.Instance, Service: c.key.Service,
		Version: c.key.Version, Reason: "adopted after an upgrade"})
	return nil
}

// isChild fails unless pid is a child of this process (waitid answers ECHILD for any
// other pid); an exited child not yet reaped still counts: the reaper collects it.
func isChild(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		switch {
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.ECHILD):
			return fmt.Errorf("pid %d is not a child of this broker", pid)
		case err != nil:
			return fmt.Errorf("waitid %d: %w", pid, err)
		}
		return nil
	}
}

// pidfdNames checks that the pidfd f refers to pid (its fdinfo "Pid:" line).
func pidfdNames(f *os.File, pid int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	var b []byte
	if cerr := rc.Control(func(fd uintptr) {
		b, err = os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(fd)))
	}); cerr != nil {
		return fmt.Errorf("pidfd: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("pidfd: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			if got := strings.TrimSpace(v); got != strconv.Itoa(pid) {
				return fmt.Errorf("pidfd names pid %s, not %d", got, pid)
			}
			return nil
		}
	}
	return errors.New("pidfd: descriptor is not a pidfd")
}
