package supervisor

import "github.com/rpbroker/broker/config"

// snapshot is the running state as readers outside the event loop see it (admin CONFIG,
// STATUS, metrics). The Run loop is its only writer: it builds a new snapshot for every
// change and publishes it whole, so a reader sees either the state before a reload or the
// state after it, never a mix. Nothing reachable from a published snapshot is mutated.
type snapshot struct {
	// cfg also serves as the runner table's view: Run keeps exactly one runner per
	// cfg.Services entry, so readers need nothing more.
	cfg        *config.Config
	lastReload ReloadResult
	reloadSeq  uint64
}

// publish stores a new snapshot derived from the current one; only the Run loop (or New,
// before Run) calls it.
func (s *Supervisor) publish(change func(next *snapshot)) {
	next := &snapshot{}
	if cur := s.state.Load(); cur != nil {
		*next = *cur
	}
	change(next)
	s.state.Store(next)
}

// publishConfig makes cfg the config in force for readers.
func (s *Supervisor) publishConfig(cfg *config.Config) {
	s.publish(func(next *snapshot) { next.cfg = cfg })
}

// config is the config in force. Safe from any goroutine; the value must not be modified.
func (s *Supervisor) config() *config.Config { return s.state.Load().cfg }
