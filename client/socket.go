package client

import (
	"fmt"

	"github.com/rpbroker/broker/wire/names"
)

// DefaultSocket is the control socket a v1 client uses for service (docs/protocol.md, "Names and paths"): the
// per-service `-svc-` socket for private-isolation services, the `-shared` socket for
// shared ones, in $XDG_RUNTIME_DIR/running-process/broker or
// /tmp/running-process-{uid}/broker.
func DefaultSocket(service string, shared bool) (string, error) {
	if err := names.CheckService(service); err != nil {
		return "", fmt.Errorf("default socket: %w", err)
	}
	l, err := names.DefaultLayout("")
	if err != nil {
		return "", fmt.Errorf("default socket: %w", err)
	}
	leaf := l.ServiceLeaf(service)
	if shared {
		leaf = l.SharedLeaf()
	}
	return l.Path(leaf)
}
