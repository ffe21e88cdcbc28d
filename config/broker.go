package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rpbroker/broker/wire/names"
)

// LogFormatEnv is the v1 variable that overrides log_format (json|text|auto).
const LogFormatEnv = "RP_BROKER_LOG_FORMAT"

var (
	logFormats = []string{"auto", "json", "text"}
	logLevels  = []string{"trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled"}
)

// broker fills cfg.Broker from the file's [broker] table and the BROKER_ overrides, then
// applies defaults. A key set in the environment wins over the file.
func (d *decoder) broker(cfg *Config, fileM, envM map[string]any) {
	d.unknown(fileM, brokerKeys, "broker.")
	fileSrc := source{m: fileM, label: func(k string) string { return "broker." + k }}
	envSrc := source{m: envM, fromEnv: true, label: func(k string) string {
		return fmt.Sprintf("broker.%s (env %s)", k, envName(k))
	}}
	// pick returns the layer that sets key, or ok=false for the default.
	pick := func(key string) (source, bool) {
		switch {
		case envSrc.has(key):
			cfg.Sources[key] = "env " + envName(key)
			return envSrc, true
		case fileSrc.has(key):
			cfg.Sources[key] = "config-file"
			return fileSrc, true
		}
		cfg.Sources[key] = "default"
		return source{}, false
	}
	b := &cfg.Broker

	if s, ok := pick("servicedef_dir"); ok {
		b.ServicedefDir, _ = d.path(s, "servicedef_dir")
	}
	if b.ServicedefDir == "" && !setNonEmpty("servicedef_dir", fileSrc, envSrc) {
		dir, src := defaultServicedefDir(d.getenv)
		var err error
		if b.ServicedefDir, err = absPath(dir); err != nil {
			d.errf("broker.servicedef_dir", "no default: %v; set servicedef_dir", err)
		}
		cfg.Sources["servicedef_dir"] = src
	}

	if s, ok := pick("runtime_dir"); ok {
		b.RuntimeDir, _ = d.path(s, "runtime_dir")
	}
	if b.RuntimeDir == "" && !setNonEmpty("runtime_dir", fileSrc, envSrc) {
		var err error
		b.RuntimeDir, err = absPath(names.DefaultRuntimeDir(os.Getuid(), d.getenv))
		if err != nil {
			d.errf("broker.runtime_dir", "no default: %v; set runtime_dir", err)
		}
		cfg.Sources["runtime_dir"] = "default"
	}

	if s, ok := pick("event_log"); ok {
		b.EventLog, _ = d.path(s, "event_log")
	}
	if b.EventLog == "" && b.RuntimeDir != "" && !setNonEmpty("event_log", fileSrc, envSrc) {
		b.EventLog = filepath.Join(b.RuntimeDir, DefaultEventLogName)
		cfg.Sources["event_log"] = "default"
	}

	b.LogFormat, b.LogLevel = DefaultLogFormat, DefaultLogLevel
	if s, ok := pick("log_format"); ok {
		b.LogFormat, _ = d.oneOf(s, "log_format", logFormats...)
	}
	if v := strings.ToLower(strings.TrimSpace(d.getenv(LogFormatEnv))); v != "" {
		// The v1 knob wins over BROKER_LOG_FORMAT and the file; read here, with them, so
		// that a reload keeps it and admin CONFIG names it as the source.
		rp := source{m: map[string]any{"log_format": v}, fromEnv: true,
			label: func(string) string { return "broker.log_format (env " + LogFormatEnv + ")" }}
		b.LogFormat, _ = d.oneOf(rp, "log_format", logFormats...)
		cfg.Sources["log_format"] = "env " + LogFormatEnv
	}
	if s, ok := pick("log_level"); ok {
		b.LogLevel, _ = d.oneOf(s, "log_level", logLevels...)
	}

	b.HelloTimeout = DefaultHelloTimeout
	if s, ok := pick("hello_timeout"); ok {
		b.HelloTimeout, _ = d.duration(s, "hello_timeout", true)
	} else if ms := strings.TrimSpace(d.getenv("RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS")); ms != "" {
		// v1 compatibility: the reference broker's only knob for this deadline.
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil || n <= 0 {
			d.errf("broker.hello_timeout (env RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS)", "%q is not a positive number of milliseconds", ms)
		}
		b.HelloTimeout = time.Duration(n) * time.Millisecond
		cfg.Sources["hello_timeout"] = "env RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS"
	}

	b.HelloRateLimit = DefaultHelloRateLimit
	if s, ok := pick("hello_rate_limit"); ok {
		b.HelloRateLimit, _ = d.integer(s, "hello_rate_limit", 0)
	}

	b.ShutdownGrace = DefaultShutdownGrace
	if s, ok := pick("shutdown_grace"); ok {
		b.ShutdownGrace, _ = d.duration(s, "shutdown_grace", false)
	}
}

// setNonEmpty reports whether a layer sets key to something other than "". Used when the
// decoded value is still empty: the value did not decode (already reported), so no default
// is put on top of the error.
func setNonEmpty(key string, layers ...source) bool {
	for _, s := range layers {
		if v, ok := s.m[key]; ok && v != "" {
			return true
		}
	}
	return false
}
