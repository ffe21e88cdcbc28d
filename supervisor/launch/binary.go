package launch

import (
	"github.com/rpbroker/broker/supervisor/preflight"
	"github.com/rpbroker/broker/wire/wirepb"
)

// resolveBinary is preflight.Binary: `broker check` and the start-up checks resolve a
// launch binary exactly as a spawn does.
func resolveBinary(def *wirepb.ServiceDefinition) (string, error) { return preflight.Binary(def) }
