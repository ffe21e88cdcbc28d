package launch

// StopUnreachable drains and stops, concurrently and off the caller's goroutine,
// every launched backend whose service is not reachable(service).
//
// It returns at once: the matching backends leave the registry and Backends() before it
// returns, so no new Hello routes to them; each then gets SIGTERM, SIGKILL after Grace,
// and is reaped by goroutines Run waits for. Children still starting are stopped too;
// their Hellos are refused. reachable is called on the caller's goroutine, once per
// child, with no lock held. Before Run or once shutdown has begun it does nothing: Run
// stops every child itself.
func (m *Manager) StopUnreachable(reachable func(service string) bool) {
	m.mu.Lock()
	if m.runCtx == nil || m.closing {
		m.mu.Unlock()
		return
	}
	all := make([]*child, 0, len(m.children))
	for c := range m.children {
		all = append(all, c)
	}
	m.mu.Unlock()

	var gone []*child
	for _, c := range all {
		if reachable(c.key.Service) {
			continue
		}
		// A child already being stopped (idle, failed) keeps its own reason and stopper.
		if !c.reason.CompareAndSwap(stopNone, stopUnreachable) {
			continue
		}
		m.unready(c) // takes c.mu then m.mu: never under m.mu
		gone = append(gone, c)
	}
	if len(gone) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		// Run's shutdown snapshot holds these children (they stay in m.children until
		// reaped) and stops them; wg may already be waited on.
		return
	}
	for _, c := range gone {
		m.wg.Go(func() { m.stop(c, stopUnreachable) })
	}
}
