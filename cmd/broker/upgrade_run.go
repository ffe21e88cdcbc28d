package main

import (
	"fmt"
	"net"
	"os"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// restoreUpgrade is the new image's first step after an upgrade in place: the state the
// previous image handed over (nil when this process was not started by an upgrade) and
// its control sockets' listeners by path. An error means the new image cannot take over:
// the caller exits non-zero with it.
func restoreUpgrade(log zerolog.Logger) (*statepb.State, map[string]*net.UnixListener, error) {
	st, ok, err := upgrade.Restore(func(w string) { log.Warn().Str("event", "upgrade").Msg(w) })
	if !ok {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	lns := make(map[string]*net.UnixListener, len(st.GetServices()))
	for _, svc := range st.GetServices() {
		ln, err := upgrade.Listener(svc.GetListenerFd(), svc.GetSocketPath(), svc.GetInode())
		if err != nil {
			// That service binds anew, as at a first start; the others keep their sockets.
			log.Warn().Err(err).Str("event", "upgrade").Str("service", svc.GetName()).
				Msg("control socket not adopted after the upgrade; binding it anew")
			continue
		}
		lns[svc.GetSocketPath()] = ln
	}
	return st, lns, nil
}

// upgradeExitReason is the line a new image that cannot take over writes to stderr.
func upgradeExitReason(err error) string {
	return fmt.Sprintf("broker: upgrade in place failed after the exec; the new image cannot take over and exits "+
		"(its launched backends die with it; the event log has the reason): %v", err)
}

// upgrading reports whether this process is the new image of an upgrade in place that has
// not restored its state yet.
func upgrading() bool {
	_, ok := os.LookupEnv(upgrade.EnvStateFD)
	return ok
}
