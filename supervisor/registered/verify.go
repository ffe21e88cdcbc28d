package registered

import (
	"context"
	"fmt"
	"time"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/wire/identity"
)

// verify checks the endpoint and returns a registry entry watching the backend process.
func (b *Backend) verify(ctx context.Context) (*registry.Backend, error) {
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var pid int
	var hash [32]byte
	switch b.o.Verify {
	case VerifyConnect:
		p, err := identity.CheckConnect(pctx, b.o.Endpoint)
		if err != nil {
			return nil, err
		}
		pid = p
	default:
		dp, err := identity.ProbeAndVerify(pctx, b.o.Endpoint, b.o.Hasher, 0)
		if err != nil {
			return nil, err
		}
		pid = int(dp.Pid)
		copy(hash[:], dp.ExeHash)
	}
	proc, err := registry.WatchPID(pid)
	if err != nil {
		return nil, fmt.Errorf("watch backend pid %d: %w", pid, err)
	}
	key := registry.Key{Instance: b.o.Instance, Service: b.o.Service, Version: b.o.Version, ExeHash: hash}
	return registry.NewBackend(key, b.o.Endpoint, proc, "registered"), nil
}
