package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// stop drains within shutdown_grace: Hellos are refused with SHUTTING_DOWN and readyz
// turns not ready; the launcher is cancelled at once, so a spawn in flight is killed and
// its waiting clients are answered SHUTTING_DOWN instead of holding the drain up; the
// Hellos still being routed finish; then the loops stop and remove their sockets while
// launched backends get SIGTERM, and both are waited for.
func (s *Supervisor) stop(why string) error {
	grace := s.cfg.Broker.ShutdownGrace
	deadline := time.Now().Add(grace)
	s.log.Info().Str("reason", why).Stringer("grace", grace).Msg("shutting down")
	s.stopping(why, grace)
	s.shared.Drain()
	s.cancelLauncher()
	idleCtx, cancel := context.WithDeadline(context.Background(), deadline)
	if err := s.shared.WaitHellosIdle(idleCtx); err != nil {
		s.log.Warn().Int64("hellos_in_flight", s.shared.HellosInFlight()).Msg("Hellos still in flight at the end of shutdown_grace")
	}
	cancel()
	var stuck []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for name, r := range s.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !r.stop(max(time.Until(deadline), 10*time.Millisecond)) {
				mu.Lock()
				stuck = append(stuck, name)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.stopLoader()
	if len(stuck) > 0 {
		return fmt.Errorf("shutdown: serve loops still running after %s: %v", grace, stuck)
	}
	return nil
}
