package supervisor

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// notifier tells systemd what the broker is doing (sd_notify; docs/operations.md,
// "Running under systemd"). The datagrams are sent by go-systemd's daemon package, a kept
// implementation of the protocol, rather than by one of our own. Without NOTIFY_SOCKET it
// is off: every method returns at once and every channel it hands the event loop is nil,
// so the loop's notify cases never fire. Only the event loop (Run) touches it.
type notifier struct {
	on  bool
	log zerolog.Logger

	watchdog *time.Ticker // WATCHDOG=1 at half of WATCHDOG_USEC; nil when off
	status   *time.Ticker // STATUS= refresh when the line changed; nil when off

	// Start-up: READY=1 waits for every first probe (pending) and then every socket bound,
	// re-checked on recheck while one is still binding.
	pending []<-chan struct{}
	recheck *time.Timer
	ready   bool

	lastStatus string
}

const (
	statusEvery  = time.Second
	recheckEvery = 10 * time.Millisecond
	// stopSlack is added to the drain's own bound in EXTEND_TIMEOUT_USEC: the loader, the
	// event log and the group's other actors stop after the drain.
	stopSlack = 5 * time.Second
)

func newNotifier(log zerolog.Logger) *notifier {
	n := &notifier{on: os.Getenv("NOTIFY_SOCKET") != "", log: log}
	if !n.on {
		return n
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn().Err(err).Msg("systemd watchdog settings unusable; not sending WATCHDOG=1")
	} else if interval > 0 {
		n.watchdog = time.NewTicker(interval / 2)
	}
	n.status = time.NewTicker(statusEvery)
	n.recheck = time.NewTimer(0)
	return n
}

// startNotifier is called by Run once the runners are started: READY=1 waits for the
// first probe of each registered backend they started.
func (s *Supervisor) startNotifier() *notifier {
	n := newNotifier(s.log)
	if n.on {
		for _, r := range s.runners {
			if r.backend != nil {
				n.pending = append(n.pending, r.backend.b.Probed())
			}
		}
	}
	return n
}

func (n *notifier) close() {
	if !n.on {
		return
	}
	if n.watchdog != nil {
		n.watchdog.Stop()
	}
	n.status.Stop()
	n.recheck.Stop()
}

// send writes one notification; a failure is logged, never fatal: systemd going away
// must not take the broker with it.
func (n *notifier) send(lines ...string) {
	if !n.on {
		return
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Warn().Err(err).Str("notify", lines[0]).Msg("sd_notify failed")
	}
}

// ping keeps systemd's watchdog fed.
func (n *notifier) ping() { n.send(daemon.SdNotifyWatchdog) }

// startupC fires when readiness may have changed: the next first probe answered, or the
// re-check of the sockets. Nil once ready.
func (n *notifier) startupC() <-chan struct{} {
	if !n.on || n.ready {
		return nil
	}
	if len(n.pending) > 0 {
		return n.pending[0]
	}
	return nil
}

func (n *notifier) recheckC() <-chan time.Time {
	if !n.on || n.ready || len(n.pending) > 0 {
		return nil
	}
	return n.recheck.C
}

func (n *notifier) watchdogC() <-chan time.Time {
	if n.watchdog == nil {
		return nil
	}
	return n.watchdog.C
}

func (n *notifier) statusC() <-chan time.Time {
	if !n.on || !n.ready {
		return nil
	}
	return n.status.C
}

// startupStep runs on the event loop when startupC or recheckC fired: once every first
// probe has answered and every runner serves, READY=1.
func (s *Supervisor) startupStep() {
	n := s.notify
	for len(n.pending) > 0 {
		select {
		case <-n.pending[0]:
			n.pending = n.pending[1:]
		default:
			return
		}
	}
	for _, r := range s.runners {
		if r.loop.Load() == nil {
			n.recheck.Reset(recheckEvery)
			return
		}
	}
	n.ready = true
	n.lastStatus = s.statusLine()
	n.send(daemon.SdNotifyReady, "STATUS="+n.lastStatus)
}

// refreshStatus sends STATUS= when the line changed since the last one sent.
func (s *Supervisor) refreshStatus() {
	if line := s.statusLine(); line != s.notify.lastStatus {
		s.notify.lastStatus = line
		s.notify.send("STATUS=" + line)
	}
}

// reloadNotified applies a reload between RELOADING=1 and READY=1, so that systemctl
// reload (Type=notify-reload, or ExecReload with Type=notify) waits for it to finish. A
// reload before start-up is complete says nothing: READY=1 still belongs to start-up.
func (s *Supervisor) reloadNotified() ReloadResult {
	n := s.notify
	if !n.ready {
		return s.reload()
	}
	n.send(daemon.SdNotifyReloading, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
	res := s.reload()
	n.lastStatus = s.statusLine()
	n.send(daemon.SdNotifyReady, "STATUS="+n.lastStatus)
	return res
}

// stopping says STOPPING=1 and extends systemd's stop timeout to cover the drain, which
// may be longer than TimeoutStopSec: shutdown_grace, then the launched backends' SIGTERM
// to SIGKILL grace.
func (s *Supervisor) stopping(why string, grace time.Duration) {
	extend := grace + defaultChildGrace + stopSlack
	s.notify.send(daemon.SdNotifyStopping, "STATUS=stopping ("+why+")",
		fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extend.Microseconds()))
}

// statusLine is the one line systemctl status shows: services serving, backends live,
// the last reload.
func (s *Supervisor) statusLine() string {
	serving := 0
	for _, r := range s.runners {
		if r.loop.Load() != nil {
			serving++
		}
	}
	live := 0
	for _, b := range s.registry.List() {
		if b.Alive() {
			live++
		}
	}
	line := fmt.Sprintf("%d/%d services serving, %d backends live", serving, len(s.runners), live)
	last := s.state.Load().lastReload
	switch {
	case last.At.IsZero():
		return line + ", no reload yet"
	case last.Err != nil:
		msg, _, _ := strings.Cut(last.Err.Error(), "\n")
		return line + ", last reload failed at " + last.At.Format(time.TimeOnly) + ": " + msg
	default:
		return line + ", last reload ok at " + last.At.Format(time.TimeOnly)
	}
}

// childEnviron is the broker's environment for launched backends, without the variables
// systemd addresses to the broker alone: a backend that speaks sd_notify itself must not
// report as the broker's unit (systemd drops and logs it) nor take over its watchdog.
func childEnviron() []string { return withoutNotify(os.Environ()) }

func withoutNotify(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		out = append(out, kv)
	}
	return out
}
