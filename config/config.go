// Package config loads, validates and compares broker.toml. It is the only package that
// parses the file; everyone else receives a *Config.
//
// Environment overrides. Every [broker] key can be set from the environment with a
// BROKER_ prefix and the key in upper case; the environment wins over the file:
//
//	BROKER_SERVICEDEF_DIR    broker.servicedef_dir    path
//	BROKER_RUNTIME_DIR       broker.runtime_dir       path
//	BROKER_LOG_FORMAT        broker.log_format        auto | json | text
//	BROKER_LOG_LEVEL         broker.log_level         trace | debug | info | warn | error | fatal | panic | disabled
//	BROKER_HELLO_TIMEOUT     broker.hello_timeout     Go duration, e.g. 5s
//	BROKER_HELLO_RATE_LIMIT  broker.hello_rate_limit  integer, 0 = off
//	BROKER_SHUTDOWN_GRACE    broker.shutdown_grace    Go duration
//	BROKER_EVENT_LOG         broker.event_log         path
//
// An empty BROKER_ variable counts as unset; other BROKER_ variables are ignored (the prefix
// is too common to reject strangers). [[service]] tables have no environment overrides.
// Two v1 variables supply defaults when neither the file nor a BROKER_ variable sets the
// key: RUNNING_PROCESS_SERVICE_DEF_DIR (servicedef_dir) and
// RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS (hello_timeout, in milliseconds).
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	gotoml "github.com/pelletier/go-toml/v2"

	"github.com/rpbroker/broker/internal/tomltype"
	"github.com/rpbroker/broker/wire/names"
)

// Service modes.
const (
	ModeRegistered = "registered" // the broker verifies and hands out a backend someone else runs
	ModeLaunch     = "launch"     // the broker starts backends from their servicedef on a Hello miss
)

// Verify methods of a registered backend.
const (
	VerifyProbe   = "probe"   // v1 identity probe (docs/protocol.md, "The identity probe")
	VerifyConnect = "connect" // the endpoint accepts a connection from a listener with our uid
)

// AnyService is the launch-mode name that serves every service in servicedef_dir.
const AnyService = "*"

// Defaults.
const (
	DefaultLogFormat      = "auto"
	DefaultLogLevel       = "info"
	DefaultHelloTimeout   = 30 * time.Second
	DefaultHelloRateLimit = 256
	DefaultShutdownGrace  = 10 * time.Second
	DefaultMaxConnections = 256
	DefaultStartTimeout   = 10 * time.Second
	DefaultEventLogName   = "broker-events.log" // under runtime_dir
)

// Config is a loaded, defaulted and validated broker.toml.
type Config struct {
	Path     string // the file as given to Load
	Broker   Broker
	Services []Service // in file order
	// Sources says where each [broker] value came from, keyed by key name (e.g.
	// "hello_timeout"): "default", "config-file", or "env NAME".
	Sources map[string]string
}

// Broker is the [broker] table with every default filled in and every path absolute.
type Broker struct {
	ServicedefDir  string
	RuntimeDir     string
	LogFormat      string
	LogLevel       string
	HelloTimeout   time.Duration
	HelloRateLimit int // Hellos per second per peer pid; 0 = off
	ShutdownGrace  time.Duration
	EventLog       string
}

// Service is one [[service]] table: one control socket, one serve loop. Keys that do not
// apply to its mode are zero.
type Service struct {
	Name            string // a valid service name, or "*" (launch only)
	Mode            string // ModeRegistered or ModeLaunch
	Socket          string // absolute; defaulted to the v1 canonical path
	Version         string // registered only
	BackendEndpoint string // registered only
	HandoffEndpoint string // optional; "" = no handoff
	Verify          string // registered only: VerifyProbe or VerifyConnect
	MaxConnections  int
	IdleTimeout     time.Duration // launch only; 0 = never
	StartTimeout    time.Duration // launch only
}

// LoadOptions carries what Load reads from outside the file, so tests can be hermetic.
type LoadOptions struct {
	// Environ is the environment as KEY=VALUE lines, used for ~, $VARS, BROKER_ overrides
	// and the v1 defaults. Nil means os.Environ().
	Environ []string
	// Layout returns the v1 socket layout for a runtime directory; it is called only when a
	// service needs a default socket. Nil means names.DefaultLayout.
	Layout func(runtimeDir string) (names.Layout, error)
}

// Load reads, defaults and validates the file at path. Every problem is reported, joined
// with errors.Join, each naming the file, the key and the reason; on any error the
// returned Config is nil.
func Load(path string, o LoadOptions) (*Config, error) {
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	if o.Layout == nil {
		o.Layout = names.DefaultLayout
	}
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), toml.Parser()); err != nil {
		var de *gotoml.DecodeError
		var pe *fs.PathError
		switch {
		case errors.As(err, &de):
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
		case errors.As(err, &pe):
			return nil, fmt.Errorf("%s: %w", path, pe.Err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	envBroker, err := loadEnv(o.Environ)
	if err != nil {
		return nil, fmt.Errorf("%s: environment: %w", path, err)
	}
	d := &decoder{file: path, getenv: getenvFrom(o.Environ), layout: o.Layout}
	cfg := d.decode(k.Raw(), envBroker)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return cfg, nil
}

func getenvFrom(environ []string) func(string) string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) string { return m[k] }
}

// decode builds the Config from the file's raw map and the BROKER_ overrides.
func (d *decoder) decode(raw, envBroker map[string]any) *Config {
	d.unknown(raw, topKeys, "")
	cfg := &Config{Path: d.file, Sources: map[string]string{}}
	var bm map[string]any
	if v, ok := raw["broker"]; ok {
		if bm, ok = v.(map[string]any); !ok {
			d.errf("broker", "is %s; want a [broker] table", tomltype.Describe(v))
		}
	}
	d.broker(cfg, bm, envBroker)
	sv, ok := raw["service"]
	d.services(cfg, sv, ok)
	return cfg
}
