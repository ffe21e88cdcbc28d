package serve

import "sync/atomic"

// recoverAfter good accepts in a row lift an fd-pressure demotion (v1).
const recoverAfter = 3

// FDPressure tracks demotion after EMFILE/ENFILE on accept; while demoted, Hellos are
// refused with FD_PRESSURE and admin still works.
type FDPressure struct {
	demoted atomic.Bool
	good    atomic.Int32
	forced  atomic.Bool // demoted by the usage sampler, independent of accept errors
}

// NewFDPressure returns an undemoted tracker.
func NewFDPressure() *FDPressure { return &FDPressure{} }

// AcceptFailed records an fd-exhaustion accept error.
func (p *FDPressure) AcceptFailed() {
	p.good.Store(0)
	p.demoted.Store(true)
}

// AcceptOK records a successful accept.
func (p *FDPressure) AcceptOK() {
	if p.demoted.Load() && p.good.Add(1) >= recoverAfter {
		p.demoted.Store(false)
		p.good.Store(0)
	}
}

// SetHighUsage demotes (or releases) on measured fd usage, before the wall is hit.
func (p *FDPressure) SetHighUsage(high bool) { p.forced.Store(high) }

// Demoted reports whether Hellos should be refused with FD_PRESSURE.
func (p *FDPressure) Demoted() bool { return p.demoted.Load() || p.forced.Load() }
