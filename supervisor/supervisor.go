// Package supervisor runs every service of a broker.toml under one owner: one serve loop
// per service, the servicedef loader, the backend verifiers. Reloads (SIGHUP, `broker
// reload`) and shutdown (signals, admin SHUTDOWN) are funnelled into one event loop that
// applies them one at a time.
package supervisor

import (
	"context"
	"errors"
	"maps"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/internal/task"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
	"github.com/rpbroker/broker/wire/identity"
)

// Options configure a Supervisor.
type Options struct {
	// Load reads and validates the config file; the supervisor calls it at start and on
	// every reload.
	Load func() (*config.Config, error)
	Log  zerolog.Logger
	// OnBrokerChange, if set, is called on the event loop when a reload changes any
	// [broker] key, so that the caller applies what it owns: the logger behind Log
	// (log_level, log_format).
	OnBrokerChange func(old, new config.Broker)
	// Inherited maps a socket path to a listening socket the broker was handed (systemd
	// socket activation). A service whose socket is that path serves on it instead of
	// binding; the broker never unlinks such a socket.
	Inherited map[string]*net.UnixListener
	// Version is the broker's version, logged with "broker started".
	Version string
	// Thread is the process's main thread (osthread.Main): launched backends are started
	// from it and an upgrade in place execs from it. Nil: the launcher locks a thread of
	// its own and upgrades are refused.
	Thread *osthread.Thread
	// Restore is the state an upgrade in place handed over (upgrade.Restore); its
	// listeners come in Inherited. Nil at a first start.
	Restore *statepb.State
}

// Supervisor owns the running broker. Create it with New, run it with Run.
type Supervisor struct {
	o        Options
	log      zerolog.Logger
	shared   *serve.Shared
	registry *registry.Registry
	hasher   *identity.Hasher
	defs     *defsView
	metrics  *metrics
	events   *events.Log // nil when the event log could not be opened
	pid      int
	board    statusBoard // per-service state and Hello counts for admin STATUS
	// inherited holds the handed-over listeners (Options.Inherited) not yet serving a
	// service; owned by the Run goroutine.
	inherited map[string]*net.UnixListener

	// state is the config in force and the last reload as readers on any goroutine see
	// them; the Run goroutine publishes it once a change is whole.
	state atomic.Pointer[snapshot]

	// Owned by the Run goroutine. cfg runs ahead of state while a reload is applied.
	ctx     context.Context
	cfg     *config.Config
	runners map[string]*runner
	loader  *task.Task // the servicedef loader and the goroutine applying its changes
	launch  *launchRun
	notify  *notifier // sd_notify; off without NOTIFY_SOCKET

	reloads  chan chan ReloadResult
	upgrades chan upgradeReq
	shutdown chan struct{}

	// The image: generation is 0 at first start and +1 per upgrade in place.
	generation  uint64
	exe         string          // this binary's path, the default new binary of an upgrade
	buildID     func() string   // the executable's hash, computed when first asked
	unowned     map[string]bool // sockets handed over by socket activation: never unlinked
	lastUpgrade atomic.Pointer[upgradeOutcome]

	stopOnce sync.Once
	started  atomic.Bool
}

// defaultChildGrace bounds SIGTERM→SIGKILL for launched backends.
const defaultChildGrace = 5 * time.Second

// ReloadResult is what one reload did.
type ReloadResult struct {
	Plan  config.Plan
	Lines []string
	Err   error
	At    time.Time
}

// New loads and validates the config; a bad file is an error here (fatal at start).
func New(o Options) (*Supervisor, error) {
	cfg, err := o.Load()
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		o:        o,
		log:      o.Log,
		cfg:      cfg,
		registry: registry.New(),
		hasher:   &identity.Hasher{},
		runners:  make(map[string]*runner),
		reloads:  make(chan chan ReloadResult),
		upgrades: make(chan upgradeReq),
		shutdown: make(chan struct{}),
		unowned:  map[string]bool{},
	}
	s.pid = os.Getpid()
	s.exe, _ = os.Executable()
	// After an upgrade the pre-check has hashed this binary already: never on the switch's
	// critical path.
	s.buildID = sync.OnceValue(func() string {
		if id := o.Restore.GetNextBuildId(); id != "" {
			return id
		}
		id, err := upgrade.BuildID()
		if err != nil {
			s.log.Warn().Err(err).Msg("build id unknown")
		}
		return id
	})
	for path := range o.Inherited {
		s.unowned[path] = true
	}
	s.inherited = maps.Clone(o.Inherited)
	if s.inherited == nil {
		s.inherited = map[string]*net.UnixListener{}
	}
	s.publishConfig(cfg)
	s.metrics = newMetrics(s)
	s.shared = serve.NewShared(serve.NewRateLimiter(cfg.Broker.HelloRateLimit, time.Second, nil), observer{s})
	s.defs = &defsView{}
	if st := o.Restore; st != nil {
		s.generation = st.GetGeneration() + 1
		for _, svc := range st.GetServices() {
			if !svc.GetInherited() {
				delete(s.unowned, svc.GetSocketPath()) // bound by an earlier image: ours
			}
		}
		s.restoreCounters(st)
	}
	return s, nil
}

// Run starts every service and serves until ctx ends or a shutdown is requested; then it
// drains within shutdown_grace and returns.
//
// Its goroutines run as one group (docs/architecture.md, "Goroutines and who stops
// them"): the event loop, the launcher and the fd watcher. The event loop ends the group:
// its stop drains, cancels the launcher's spawns, stops the serve loops and the loader;
// then the group interrupts the other actors and waits for every one of them.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run called twice")
	}
	// Loops and backends live until stop says so, not until ctx ends: the drain needs them.
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.ctx = runCtx
	cfg := s.cfg
	// Every socket is bound (or its error is transient) before anything else starts.
	bound, err := s.bindAll(cfg)
	if err != nil {
		return err
	}
	s.openEvents(cfg.Broker.EventLog)
	defer func() {
		if s.events != nil {
			s.events.Close()
		}
	}()
	s.startLoader(cfg.Broker.ServicedefDir)
	s.newLauncher()
	for _, svc := range cfg.Services {
		s.runners[svc.Name] = s.startRunner(svc, bound[svc.Name])
	}
	s.log.Info().Str("version", s.o.Version).Str("config", cfg.Path).Strs("sockets", startedSockets(cfg)).
		Int("services", len(cfg.Services)).Msg("broker started")
	if s.o.Restore != nil && s.launch.m == nil {
		s.upgraded(0, nil) // no launcher to adopt backends: the switch ends here
	}

	s.notify = s.startNotifier()
	defer s.notify.close()

	var g run.Group
	g.Add(func() error { return s.eventLoop(ctx) }, func(error) { s.requestShutdown() })
	if s.launch.m != nil {
		g.Add(s.runLauncher, func(error) { s.launch.cancel() })
	}
	fdCtx, fdCancel := context.WithCancel(runCtx)
	g.Add(func() error { s.watchFDs(fdCtx, time.Second); return nil }, func(error) { fdCancel() })
	if err := g.Run(); err != nil {
		return err
	}
	s.log.Info().Msg("broker stopped")
	return nil
}

// eventLoop applies reloads one at a time until a signal or an admin shutdown, then stops.
func (s *Supervisor) eventLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return s.stop("signal")
		case <-s.shutdown:
			return s.stop("admin shutdown")
		case reply := <-s.reloads:
			reply <- s.reloadNotified()
		case req := <-s.upgrades:
			s.upgrade(req)
		case <-s.notify.startupC():
			s.startupStep()
		case <-s.notify.recheckC():
			s.startupStep()
		case <-s.notify.statusC():
			s.refreshStatus()
		case <-s.notify.watchdogC():
			// From the event loop itself: a wedged loop stops the pings and systemd restarts us.
			s.notify.ping()
		}
	}
}

// Reload asks the event loop to re-read the config and apply what changed. It blocks
// until the reload is done (or ctx ends).
func (s *Supervisor) Reload(ctx context.Context) ReloadResult {
	reply := make(chan ReloadResult, 1)
	select {
	case s.reloads <- reply:
	case <-ctx.Done():
		return ReloadResult{Err: ctx.Err()}
	}
	select {
	case r := <-reply:
		return r
	case <-ctx.Done():
		return ReloadResult{Err: ctx.Err()}
	}
}

func (s *Supervisor) requestShutdown() { s.stopOnce.Do(func() { close(s.shutdown) }) }
