package launch

import (
	"context"
	"errors"
	"time"

	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// probeBackoff is the pause between probe attempts: short at first, since a backend
// usually listens within milliseconds, then capped.
var probeBackoff = [...]time.Duration{
	1 * time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
}

// permanentProbeErrors end the wait at once: the child answered, but wrongly.
var permanentProbeErrors = []error{
	identity.ErrMismatch, identity.ErrMalformed, identity.ErrKind, identity.ErrProtocol,
	identity.ErrRequestID, identity.ErrNonce, identity.ErrAlgorithm, identity.ErrHashLength,
}

// awaitReady probes the child until it answers as the process we started (SO_PEERCRED
// would name the broker, which bound the listener), it exits, or timeout passes.
func (m *Manager) awaitReady(c *child, timeout time.Duration) (*wirepb.DaemonProcess, error) {
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	for i := 0; ; i++ {
		// The listener is bound already, so a probe to a child still starting waits in the
		// backlog and is answered the moment the child accepts.
		pctx, pcancel := context.WithTimeout(ctx, identity.DefaultTimeout)
		dp, err := identity.ProbeAndVerify(pctx, c.endpoint, m.o.Hasher, c.pid)
		pcancel()
		if err == nil {
			return dp, nil
		}
		if exited(c) {
			return nil, spawnFailed("backend exited before ready: %s", c.status)
		}
		if m.runCtx.Err() != nil {
			return nil, errClosing
		}
		for _, perm := range permanentProbeErrors {
			if errors.Is(err, perm) {
				return nil, spawnFailed("backend identity probe: %v", err)
			}
		}
		if ctx.Err() != nil {
			// The reaper closes exited, then cancels c.ctx: an exit may have ended ctx
			// since the check above, and must not read as a timeout.
			if exited(c) {
				return nil, spawnFailed("backend exited before ready: %s", c.status)
			}
			m.o.Log.Debug().Err(err).Int("pid", c.pid).Msg("last identity probe error")
			return nil, spawnFailed("backend did not answer the identity probe within %s", timeout)
		}
		t := time.NewTimer(probeBackoff[min(i, len(probeBackoff)-1)])
		select {
		case <-ctx.Done():
		case <-c.exited:
		case <-t.C:
		}
		t.Stop()
	}
}

// exited reports whether the reaper has collected c (its status is then set).
func exited(c *child) bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}
