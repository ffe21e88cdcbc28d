package supervisor

import (
	"fmt"
	"net"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/serve"
)

// bindNew binds the control socket of every service a reload adds or moves, before
// anything running is touched: if one cannot be bound, the listeners bound so far are
// closed and the error names the service, so the reload fails with the old sockets still
// serving. A new socket that a service retired by the same reload still holds cannot be
// bound yet; it is left out of the map and bound once that service has stopped.
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
		ln, err := serve.Listen(svc.Socket)
		if err != nil {
			for _, l := range bound {
				l.Close()
			}
			return nil, fmt.Errorf("service %q: cannot bind its new control socket: %w", svc.Name, err)
		}
		bound[svc.Name] = ln
	}
	return bound, nil
}
