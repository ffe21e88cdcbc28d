package supervisor

import (
	"fmt"
	"net"

	"github.com/rpbroker/broker/config"
)

// bindNew binds the control socket of every service a reload adds or moves, before
// anything running is touched: if one cannot be bound, the listeners bound so far are
// closed and the error names the service, so the reload fails with the old sockets still
// serving. A socket handed over for the path (Options.Inherited) is used instead of a
// bind, and a missing directory is created only where the broker may (preflight.Ensure),
// exactly as at start. A new socket that a service retired by the same reload still holds
// cannot be bound yet; it is left out of the map and bound once that service has stopped.
func (s *Supervisor) bindNew(plan config.Plan) (map[string]*net.UnixListener, error) {
	retiring := map[string]bool{}
	for _, svc := range plan.Removed {
		retiring[svc.Socket] = true
	}
	want := append([]config.Service(nil), plan.Added...)
	for _, ch := range plan.Changed {
		if ch.Old.Socket != ch.New.Socket {
			retiring[ch.Old.Socket] = true
			want = append(want, ch.New)
		}
	}
	bound := make(map[string]*net.UnixListener, len(want))
	for _, svc := range want {
		if retiring[svc.Socket] {
			continue
		}
		ln, err := s.listen(svc.Socket, s.cfg.Broker.RuntimeDir)
		if err != nil {
			for _, l := range bound {
				s.unbind(l)
			}
			return nil, fmt.Errorf("service %q: cannot bind its new control socket: %w", svc.Name, err)
		}
		bound[svc.Name] = ln
	}
	return bound, nil
}

// unbind gives back a listener a failed reload bound: a handed-over one returns to the
// inherited set (still listening, for a later reload), one we bound is closed.
func (s *Supervisor) unbind(ln *net.UnixListener) {
	if path := ln.Addr().String(); s.o.Inherited[path] == ln {
		s.inherited[path] = ln
		return
	}
	ln.Close()
}
