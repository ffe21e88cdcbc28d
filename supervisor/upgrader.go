package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/logfield"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/supervisor/launch"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/wire/wirepb"
)

// EventUpgrade is the event log kind of an upgrade in place: ours, outside the v1 kinds.
const EventUpgrade = wirepb.EventKind(100)

// UpgradeResult is the pre-check's verdict on an upgrade request. Without Err the switch
// is under way: the next image reports itself with Generation+1 (admin status).
type UpgradeResult struct {
	Err        error
	Binary     string
	Generation uint64 // the generation being left
	New        upgrade.Prechecked
}

type upgradeReq struct {
	binary string
	at     time.Time
	reply  chan UpgradeResult
}

// Upgrade asks the event loop to replace the broker image in place with binary ("": the
// broker's own executable path, re-read from disk). It returns once the new binary's
// pre-check has answered: with an error nothing has changed.
func (s *Supervisor) Upgrade(ctx context.Context, binary string) UpgradeResult {
	req := upgradeReq{binary: binary, at: time.Now(), reply: make(chan UpgradeResult, 1)}
	select {
	case s.upgrades <- req:
	case <-ctx.Done():
		return UpgradeResult{Err: ctx.Err()}
	}
	select {
	case r := <-req.reply:
		return r
	case <-ctx.Done():
		return UpgradeResult{Err: ctx.Err()}
	}
}

// upgrade runs on the event loop (docs/operations.md, "Upgrade in place"): the pre-check
// first, with nothing changed; then the switch, which returns only if the exec failed.
func (s *Supervisor) upgrade(req upgradeReq) {
	bin := req.binary
	if bin == "" {
		bin = s.exe
	}
	res := UpgradeResult{Binary: bin, Generation: s.generation}
	log := s.log.With().Str("event", "upgrade").Str("binary", bin).Uint64("generation", s.generation).Logger()
	res.New, res.Err = s.precheck(req, bin)
	req.reply <- res
	if res.Err != nil {
		s.upgradeFailed(fmt.Errorf("refused by the pre-check: %w", res.Err), bin, req.at)
		return
	}
	log.Info().Str("to_version", res.New.Version).Str("to_build", res.New.BuildID).Msg("upgrade: pre-check passed; switching")
	err := s.switchImage(req, bin, res.New.BuildID)
	s.upgradeFailed(fmt.Errorf("switch failed, the running broker serves on: %w", err), bin, req.at)
}

func (s *Supervisor) precheck(req upgradeReq, bin string) (upgrade.Prechecked, error) {
	if s.o.Thread == nil {
		return upgrade.Prechecked{}, errors.New("the supervisor was not given the main thread to exec from")
	}
	preview, err := s.captureState(nil, req.at, bin, "")
	if err != nil {
		return upgrade.Prechecked{}, err
	}
	enc, err := upgrade.Encode(preview)
	if err != nil {
		return upgrade.Prechecked{}, err
	}
	return upgrade.Precheck(s.ctx, bin, s.cfg.Path, enc, os.Environ())
}

// switchImage stops taking connections (listeners stay open: new clients wait in the
// backlog), lets the connections in progress finish within hello_timeout, hands the state
// and descriptors over and execs bin on the main thread. It returns only on failure,
// with accepting resumed.
func (s *Supervisor) switchImage(req upgradeReq, bin, nextBuildID string) error {
	if s.notify.ready {
		s.notify.send(daemon.SdNotifyReloading, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), "STATUS=upgrading")
	}
	defer func() {
		if s.notify.ready {
			s.notify.lastStatus = s.statusLine()
			s.notify.send(daemon.SdNotifyReady, "STATUS="+s.notify.lastStatus)
		}
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Broker.HelloTimeout)
	defer cancel()
	var held []func()
	defer func() {
		for _, release := range held {
			release()
		}
	}()
	for _, r := range s.runners {
		if l := r.loop.Load(); l != nil {
			if err := l.Hold(ctx); err != nil {
				return fmt.Errorf("hold %s: %w", r.svc.Socket, err)
			}
			held = append(held, l.Release)
		}
	}
	s.waitConnectionsDone(ctx)

	var h upgrade.Handover
	defer h.Close()
	st, err := s.captureState(&h, req.at, bin, nextBuildID)
	if err != nil {
		return err
	}
	enc, err := upgrade.Encode(st)
	if err != nil {
		return err
	}
	mfd, err := upgrade.WriteMemfd(enc)
	if err != nil {
		return err
	}
	defer mfd.Close()
	argv := os.Args
	if bin != s.exe {
		argv = append([]string{bin}, os.Args[1:]...)
	}
	s.log.Info().Str("event", "upgrade").Str("binary", bin).Int("services", len(st.Services)).
		Int("backends", len(st.Backends)).Msg("upgrade: executing the new image")
	ran := s.o.Thread.Do(func() { err = h.Exec(bin, argv, os.Environ(), mfd) })
	if !ran {
		err = errors.New("the main thread no longer serves")
	}
	return err
}

// waitConnectionsDone waits until no control connection is open (the ones accepted
// before the hold have been answered) or ctx ends. Connections are short: one frame and
// its reply, each under hello_timeout.
func (s *Supervisor) waitConnectionsDone(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for s.shared.ConnectionsOpen() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn().Int64("connections_open", s.shared.ConnectionsOpen()).
				Msg("upgrade: connections still open at hello_timeout; they are cut by the exec")
			return
		case <-t.C:
		}
	}
}

// upgradeFailed records an upgrade that did not happen: the log, the event log, status.
func (s *Supervisor) upgradeFailed(err error, bin string, at time.Time) {
	s.log.Error().Err(err).Str("event", "upgrade").Str("binary", bin).Msg("upgrade failed")
	s.emit(events.Event{Kind: EventUpgrade, Severity: events.SeverityError, Reason: err.Error(),
		Extra: map[string]string{"result": "failed", "binary": bin, "generation": strconv.FormatUint(s.generation, 10)}})
	s.lastUpgrade.Store(&upgradeOutcome{at: at, err: err})
}

// upgraded records, in the new image, the upgrade that started it: once adoption is done
// and every service serves.
func (s *Supervisor) upgraded(adopted int, adoptErr error) {
	st := s.o.Restore
	took := time.Since(time.Unix(0, st.GetRequestedUnixNano()))
	ev := s.log.Info()
	if adoptErr != nil {
		ev = s.log.Warn().AnErr("adopt_error", adoptErr)
	}
	ev.Str("event", "upgrade").Uint64("generation", s.generation).Str("from_version", st.GetWriterVersion()).
		Str("to_version", s.o.Version).Str("build_id", s.buildID()).Int("backends_adopted", adopted).
		Str("took", logfield.Dur(took)).Msgf("upgraded in place in %s", logfield.Dur(took))
	extra := map[string]string{"result": "ok", "generation": strconv.FormatUint(s.generation, 10),
		"from_version": st.GetWriterVersion(), "to_version": s.o.Version, "build_id": s.buildID(),
		"took_ms":          strconv.FormatFloat(float64(took.Microseconds())/1000, 'f', 3, 64),
		"backends_adopted": strconv.Itoa(adopted)}
	reason := "upgraded in place"
	if adoptErr != nil {
		reason += "; " + adoptErr.Error()
	}
	s.emit(events.Event{Kind: EventUpgrade, Reason: reason, Extra: extra})
	s.lastUpgrade.Store(&upgradeOutcome{at: time.Unix(0, st.GetRequestedUnixNano()), took: took})
}

// upgradeOutcome is the last upgrade as status reports it.
type upgradeOutcome struct {
	at   time.Time
	took time.Duration
	err  error
}

// RecordUpgradeFailure writes the reason a new image could not take over to the event
// log of cfg: the process is about to exit, and its log may be gone with it.
func RecordUpgradeFailure(cfg *config.Config, err error) {
	if cfg == nil || cfg.Broker.EventLog == "" {
		return
	}
	l, oerr := events.Open(cfg.Broker.EventLog, events.Options{BrokerInstance: fmt.Sprintf("broker:%d", os.Getpid())})
	if oerr != nil {
		return
	}
	l.Emit(events.Event{Kind: EventUpgrade, Severity: events.SeverityFatal, Reason: "the new image could not restore: " + err.Error(),
		Extra: map[string]string{"result": "failed after exec"}})
	l.Close()
}

// image is the running image for admin STATUS.
func (s *Supervisor) image() admin.Image {
	im := admin.Image{Generation: s.generation, Version: s.o.Version, BuildID: s.buildID()}
	if u := s.lastUpgrade.Load(); u != nil {
		im.Upgrade = &admin.UpgradeStatus{AtUnixMS: u.at.UnixMilli(), OK: u.err == nil,
			TookMS: float64(u.took.Microseconds()) / 1000}
		if u.err != nil {
			im.Upgrade.Error = u.err.Error()
		}
	}
	return im
}

// adminUpgrade answers admin VerbUpgrade once the new binary's pre-check has answered.
func (s *Supervisor) adminUpgrade(ctx context.Context, binary string) (string, error) {
	res := s.Upgrade(ctx, binary)
	if res.Err != nil {
		return "", fmt.Errorf("upgrade refused, the running broker is untouched: %w", res.Err)
	}
	return fmt.Sprintf("pre-check passed: %s is version %s (build %s); switching from generation %d\n",
		res.Binary, res.New.Version, res.New.BuildID, res.Generation), nil
}

// adoption is the launcher's Adoption of the backends an upgrade handed over, or nil.
func (s *Supervisor) adoption() *launch.Adoption {
	if s.o.Restore == nil {
		return nil
	}
	return adoptionOf(s.o.Restore, launch.DefaultStartTimeout, s.upgraded)
}
