package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor/preflight"
	"github.com/rpbroker/broker/wire/wirepb"
)

// startCheck is one of the checks `broker run` makes before it serves anything
// (preflight.Items), as check and doctor report it.
type startCheck struct {
	preflight.Item
	// note replaces Err for a socket a running broker serves: `broker run` would refuse a
	// second broker, but the file is fine for the one running (`broker reload`), as
	// `nginx -t` is fine while nginx runs.
	note string
}

// startChecks runs the same start-up checks as `broker run`, through the same functions.
func startChecks(ctx context.Context, cfg *config.Config) []startCheck {
	items := preflight.Items(cfg, preflight.Options{})
	out := make([]startCheck, len(items))
	for i, it := range items {
		out[i] = startCheck{Item: it}
		var inUse *preflight.InUseError
		if it.Warning {
			out[i].note = fmt.Sprintf("%v: the broker starts; Hellos for this service are refused until the file is fixed", it.Err)
			out[i].Err = nil
		}
		if errors.As(it.Err, &inUse) && answersAsBroker(ctx, inUse.Path) {
			out[i].note = fmt.Sprintf("%s is served by a running broker (pid %d): `broker reload` applies this file to it; `broker run` would refuse to start a second one",
				inUse.Path, inUse.PID)
			out[i].Err = nil
		}
	}
	return out
}

// answersAsBroker reports whether the process listening on path answers an admin READYZ.
func answersAsBroker(ctx context.Context, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := client.Admin(ctx, path, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_READYZ})
	return err == nil
}
