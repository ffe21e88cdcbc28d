package backend

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/rpbroker/broker/wire"
)

// Launch-mode environment a broker sets for its child (v1); defined in wire.
const (
	EnvServiceName    = wire.EnvServiceName
	EnvServiceVersion = wire.EnvServiceVersion
	EnvBackendPipe    = wire.EnvBackendPipe
	EnvNamespace      = wire.EnvNamespace
	EnvInstance       = wire.EnvInstance
	EnvTraceparent    = wire.EnvTraceparent
	EnvTracestate     = wire.EnvTracestate
	EnvListenerFD     = wire.EnvListenerFD
	EnvIsDaemon       = wire.EnvIsDaemon
)

// ErrNotLaunched means the process was not started by a broker: neither a backend pipe nor
// an inherited listener is in the environment. A backend that also runs in registered mode
// falls back to New with its own endpoint.
var ErrNotLaunched = errors.New("not launched by a broker: " + wire.EnvBackendPipe + " and " + wire.EnvListenerFD + " are unset")

// FromEnv builds a Server from the launch-mode environment.
func FromEnv() (*Server, error) {
	o, err := optionsFromEnv(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	return New(o)
}

// optionsFromEnv reads the v1 launch environment through lookup.
func optionsFromEnv(lookup func(string) (string, bool)) (Options, error) {
	get := func(k string) string { v, _ := lookup(k); return v }
	o := Options{
		Endpoint:       get(wire.EnvBackendPipe),
		ServiceName:    get(wire.EnvServiceName),
		ServiceVersion: get(wire.EnvServiceVersion),
		Namespace:      get(wire.EnvNamespace),
		Instance:       get(wire.EnvInstance),
		Traceparent:    get(wire.EnvTraceparent),
		Tracestate:     get(wire.EnvTracestate),
		IsDaemon:       get(wire.EnvIsDaemon) == "1",
	}
	if v := get(wire.EnvListenerFD); v != "" {
		fd, err := strconv.Atoi(v)
		// 0-2 are stdio; an inherited listener starts at 3 (ExtraFiles).
		if err != nil || fd < 3 {
			return Options{}, fmt.Errorf("backend env: %s=%q: not a file descriptor above stdio", wire.EnvListenerFD, v)
		}
		o.ListenerFD = fd
	}
	if o.Endpoint == "" && o.ListenerFD == 0 {
		return Options{}, ErrNotLaunched
	}
	return o, nil
}
