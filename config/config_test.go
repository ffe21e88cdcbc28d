package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire/names"
)

const testSID = "0123456789abcdef"

// opts is a hermetic LoadOptions: only the given environment (after a base), a fixed user hash.
func opts(env ...string) LoadOptions {
	return LoadOptions{
		Environ: append([]string{"HOME=/home/u", "XDG_RUNTIME_DIR=/run/user/1000", "RELATIVE=rel"}, env...),
		Layout: func(dir string) (names.Layout, error) {
			return names.Layout{Dir: dir, SID: testSID}, nil
		},
	}
}

func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// TestBadFixtures loads every testdata/*.bad.toml and expects exactly the listed errors,
// each line naming the file.
func TestBadFixtures(t *testing.T) {
	want := map[string][]string{
		"unknown-keys": {
			`colour: unknown key; known keys: broker, service`,
			`broker.log_levle: unknown key; did you mean log_level?`,
			`service[1] "zccache".max_conn: unknown key; did you mean max_connections?`,
		},
		"mode": {
			`service[2] "zccache".mode: "lanch" is not one of registered, launch`,
			`service[3] "nomode".mode: missing; want one of registered, launch`,
		},
		"types": {
			`broker.log_format: "xml" is not one of auto, json, text`,
			`broker.log_level: "loud" is not one of trace, debug, info, warn, error, fatal, panic, disabled`,
			`broker.hello_timeout: 30 is an integer; want a duration string`,
			`broker.hello_rate_limit: -1 is below the minimum 0`,
			`broker.shutdown_grace: "soon" is not a duration`,
			`service[1] "zccache".max_connections: "many" is a string; want an integer`,
			`service[1] "zccache".version: 1.0 is a float; want a string`,
			`service[2] "l".max_connections: 0 is below the minimum 1`,
			`service[2] "l".idle_timeout: "-5m" is negative`,
			`service[2] "l".start_timeout: "0s" must be greater than zero`,
		},
		"registered": {
			`service[1] "noversion".version: missing; registered mode needs the backend's version`,
			`service[2] "nobackend".version: invalid version "v1.2.3"`,
			`service[2] "nobackend".backend_endpoint: missing`,
			`service[3] "*".name: "*" is only allowed with mode = "launch"`,
			`service[3] "*".verify: "trust-me" is not one of probe, connect`,
			`service[3] "*".idle_timeout: not allowed with mode = "registered" (launch only)`,
			`service[3] "*".start_timeout: not allowed with mode = "registered" (launch only)`,
		},
		"launch": {
			`service[1] "l".version: not allowed with mode = "launch" (registered only)`,
			`service[1] "l".backend_endpoint: not allowed with mode = "launch" (registered only)`,
			`service[1] "l".verify: not allowed with mode = "launch" (registered only)`,
			`service[1] "l".handoff_endpoint: not allowed with mode = "launch" (registered only)`,
		},
		"names": {
			`service[1] "ZCcache".name: "ZCcache" is not a valid service name`,
			`service[2].name: missing`,
			`service[4] "dup".name: duplicate: service[3] "dup" has the same name`,
		},
		"sockets": {
			`service[4] "d".socket: socket path /tmp/xxx`,
			`service[1] "a".socket: /tmp/same.sock is also service[3] "c".backend_endpoint`,
			`service[2] "b".socket: /tmp/same.sock is already the socket of service[1] "a"`,
			`service[2] "b".socket: /tmp/same.sock is also service[3] "c".backend_endpoint`,
		},
		"paths": {
			`broker.servicedef_dir: "services" is relative; want an absolute path`,
			`broker.runtime_dir: "$NOPE/rpb" uses $NOPE, which is not set`,
			`broker.event_log: "~nobody/events.log" is relative`,
			`service[1] "a".socket: "a.sock" is relative`,
			`service[1] "a".handoff_endpoint: "$RELATIVE/h.sock" expands to the relative path "rel/h.sock"`,
			`service[1] "a".backend_endpoint: "./backend.sock" is relative`,
		},
		"noservice":     {`service: no [[service]] tables; at least one is required`},
		"service-table": {`service: is a table; want [[service]] tables`},
		"syntax":        {`:1:8: toml: expected character ]`},
	}
	files, err := filepath.Glob("testdata/*.bad.toml")
	if err != nil || len(files) != len(want) {
		t.Fatalf("found %d bad fixtures (%v), the table has %d", len(files), err, len(want))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.toml")
		t.Run(name, func(t *testing.T) {
			exp, ok := want[name]
			if !ok {
				t.Fatalf("no expected errors for %s", f)
			}
			cfg, err := Load(f, opts())
			if err == nil || cfg != nil {
				t.Fatalf("Load(%s) = %v, %v; want an error and no config", f, cfg, err)
			}
			lines := errLines(err)
			for _, l := range lines {
				if !strings.HasPrefix(l, f+":") {
					t.Errorf("error line does not start with the file: %q", l)
				}
			}
			for _, w := range exp {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, w) }) {
					t.Errorf("missing error %q in:\n%v", w, err)
				}
			}
			if len(lines) != len(exp) {
				t.Errorf("got %d errors, want %d:\n%v", len(lines), len(exp), err)
			}
		})
	}
}

func TestGoodFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.toml")
	if len(files) == 0 {
		t.Fatal("no good fixtures")
	}
	for _, f := range files {
		if _, err := Load(f, opts()); err != nil {
			t.Errorf("Load(%s): %v", f, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/minimal.good.toml", opts())
	if err != nil {
		t.Fatal(err)
	}
	want := Broker{
		ServicedefDir:  "/home/u/.config/running-process/services",
		RuntimeDir:     "/run/user/1000/running-process/broker",
		LogFormat:      "auto",
		LogLevel:       "info",
		HelloTimeout:   30 * time.Second,
		HelloRateLimit: 256,
		ShutdownGrace:  10 * time.Second,
		EventLog:       "/run/user/1000/running-process/broker/broker-events.log",
	}
	if cfg.Broker != want {
		t.Errorf("broker defaults\n got %+v\nwant %+v", cfg.Broker, want)
	}
	svc := Service{
		Name: "zccache", Mode: ModeRegistered,
		Socket:          "/run/user/1000/running-process/broker/rpb-v1-" + testSID + "-svc-zccache.sock",
		Version:         "1.11.20",
		BackendEndpoint: "/run/user/1000/zccache.sock",
		Verify:          VerifyProbe,
		MaxConnections:  256,
	}
	if len(cfg.Services) != 1 || !cfg.Services[0].Equal(svc) {
		t.Errorf("service defaults\n got %+v\nwant %+v", cfg.Services, svc)
	}
	for k := range brokerKeys {
		if cfg.Sources[k] != "default" {
			t.Errorf("source of %s = %q, want default", k, cfg.Sources[k])
		}
	}
}

func TestFullFixture(t *testing.T) {
	cfg, err := Load("testdata/full.good.toml", opts())
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Broker
	if b.ServicedefDir != "/home/u/services" || b.RuntimeDir != "/run/user/1000/rpb" ||
		b.EventLog != "/run/user/1000/events.log" || b.HelloRateLimit != 0 || b.ShutdownGrace != 0 ||
		b.HelloTimeout != 5*time.Second || b.LogFormat != "json" || b.LogLevel != "debug" {
		t.Errorf("broker = %+v", b)
	}
	want := []Service{
		{Name: "zccache", Mode: ModeRegistered, Socket: "/tmp/zc.sock", Version: "1.11.20-rc.1",
			BackendEndpoint: "/home/u/zccache.sock", HandoffEndpoint: "/tmp/zc-handoff.sock",
			Verify: VerifyConnect, MaxConnections: 1},
		{Name: "*", Mode: ModeLaunch, Socket: "/run/user/1000/rpb/rpb-v1-" + testSID + "-shared.sock",
			MaxConnections: 1024, IdleTimeout: 10 * time.Minute, StartTimeout: 2 * time.Second},
		{Name: "build-cache", Mode: ModeLaunch, Socket: "/run/user/1000/rpb/rpb-v1-" + testSID + "-svc-build-cache.sock",
			MaxConnections: 256, StartTimeout: 10 * time.Second},
	}
	if !slices.EqualFunc(cfg.Services, want, Service.Equal) {
		t.Errorf("services\n got %+v\nwant %+v", cfg.Services, want)
	}
}

func TestEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		env   []string
		check func(*Config) bool
		err   string
	}{
		{name: "BROKER_ overrides file", file: "full", env: []string{"BROKER_LOG_LEVEL=warn", "BROKER_HELLO_TIMEOUT=250ms", "BROKER_HELLO_RATE_LIMIT=7"},
			check: func(c *Config) bool {
				return c.Broker.LogLevel == "warn" && c.Broker.HelloTimeout == 250*time.Millisecond &&
					c.Broker.HelloRateLimit == 7 && c.Sources["log_level"] == "env BROKER_LOG_LEVEL" &&
					c.Sources["log_format"] == "config-file"
			}},
		{name: "BROKER_ paths expand", file: "minimal", env: []string{"BROKER_RUNTIME_DIR=~/rt", "BROKER_SERVICEDEF_DIR=$HOME/sd"},
			check: func(c *Config) bool {
				return c.Broker.RuntimeDir == "/home/u/rt" && c.Broker.ServicedefDir == "/home/u/sd" &&
					c.Broker.EventLog == "/home/u/rt/broker-events.log" &&
					strings.HasPrefix(c.Services[0].Socket, "/home/u/rt/rpb-v1-")
			}},
		{name: "empty and unknown BROKER_ ignored", file: "minimal", env: []string{"BROKER_LOG_LEVEL=", "BROKER_URL=http://x"},
			check: func(c *Config) bool { return c.Broker.LogLevel == "info" }},
		{name: "v1 hello timeout when unset", file: "minimal", env: []string{"RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS=1500"},
			check: func(c *Config) bool {
				return c.Broker.HelloTimeout == 1500*time.Millisecond &&
					c.Sources["hello_timeout"] == "env RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS"
			}},
		{name: "file beats v1 hello timeout", file: "full", env: []string{"RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS=1500"},
			check: func(c *Config) bool { return c.Broker.HelloTimeout == 5*time.Second }},
		{name: "v1 servicedef dir", file: "minimal", env: []string{"RUNNING_PROCESS_SERVICE_DEF_DIR=/srv/defs"},
			check: func(c *Config) bool {
				return c.Broker.ServicedefDir == "/srv/defs" && c.Sources["servicedef_dir"] == "env RUNNING_PROCESS_SERVICE_DEF_DIR"
			}},
		{name: "XDG_CONFIG_HOME", file: "minimal", env: []string{"XDG_CONFIG_HOME=/cfg"},
			check: func(c *Config) bool { return c.Broker.ServicedefDir == "/cfg/running-process/services" }},
		{name: "bad BROKER_ value", file: "minimal", env: []string{"BROKER_HELLO_RATE_LIMIT=lots", "BROKER_LOG_FORMAT=xml"},
			err: `broker.hello_rate_limit (env BROKER_HELLO_RATE_LIMIT): "lots" is not an integer`},
		{name: "bad v1 hello timeout", file: "minimal", env: []string{"RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS=-3"},
			err: `broker.hello_timeout (env RUNNING_PROCESS_BROKER_HELLO_TIMEOUT_MS): "-3" is not a positive number`},
		{name: "relative v1 servicedef dir", file: "minimal", env: []string{"RUNNING_PROCESS_SERVICE_DEF_DIR=defs"},
			err: `broker.servicedef_dir: no default: "defs" is relative`},
		{name: "v1 servicedef dir is not a template", file: "minimal", env: []string{"RUNNING_PROCESS_SERVICE_DEF_DIR=/a/$b"},
			check: func(c *Config) bool { return c.Broker.ServicedefDir == "/a/$b" }},
		{name: "RP_BROKER_LOG_FORMAT beats BROKER_ and file", file: "full", env: []string{"RP_BROKER_LOG_FORMAT=Text", "BROKER_LOG_FORMAT=json"},
			check: func(c *Config) bool {
				return c.Broker.LogFormat == "text" && c.Sources["log_format"] == "env RP_BROKER_LOG_FORMAT"
			}},
		{name: "bad RP_BROKER_LOG_FORMAT", file: "minimal", env: []string{"RP_BROKER_LOG_FORMAT=xml"},
			err: `broker.log_format (env RP_BROKER_LOG_FORMAT): "xml" is not one of auto, json, text`},
		{name: "relative BROKER_ path", file: "minimal", env: []string{"BROKER_EVENT_LOG=events.log"},
			err: `broker.event_log (env BROKER_EVENT_LOG): "events.log" is relative`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load("testdata/"+tc.file+".good.toml", opts(tc.env...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Errorf("unexpected config: %+v sources %v", cfg.Broker, cfg.Sources)
			}
		})
	}
}

// TestExample keeps broker.toml.example valid: it must load for any user.
func TestExample(t *testing.T) {
	for _, env := range [][]string{
		{"HOME=/home/u", "XDG_RUNTIME_DIR=/run/user/1000"},
		{"HOME=/root"}, // CI: no XDG_RUNTIME_DIR
	} {
		cfg, err := Load("../broker.toml.example", LoadOptions{Environ: env, Layout: opts().Layout})
		if err != nil {
			t.Fatalf("env %v: %v", env, err)
		}
		if len(cfg.Services) != 2 || cfg.Services[0].Name != "echo" || cfg.Services[1].Name != AnyService {
			t.Fatalf("services = %+v", cfg.Services)
		}
		if !strings.HasSuffix(cfg.Services[0].Socket, "-svc-echo.sock") || !strings.HasSuffix(cfg.Services[1].Socket, "-shared.sock") {
			t.Errorf("default sockets: %s, %s", cfg.Services[0].Socket, cfg.Services[1].Socket)
		}
	}
}

func TestLayoutOnlyWhenNeeded(t *testing.T) {
	failing := func(string) (names.Layout, error) { return names.Layout{}, errMachineID }
	dir := t.TempDir()
	explicit := filepath.Join(dir, "explicit.toml")
	writeFile(t, explicit, "[[service]]\nname = \"a\"\nmode = \"launch\"\nsocket = \"/tmp/a.sock\"\n")
	if _, err := Load(explicit, LoadOptions{Environ: []string{"HOME=/h"}, Layout: failing}); err != nil {
		t.Errorf("explicit socket needs no layout: %v", err)
	}
	_, err := Load("testdata/minimal.good.toml", LoadOptions{Environ: []string{"HOME=/h"}, Layout: failing})
	if err == nil || !strings.Contains(err.Error(), `service[1] "zccache".socket: no default socket path: no machine id; set socket`) {
		t.Errorf("err = %v", err)
	}
}

func TestLongDefaultSocket(t *testing.T) {
	long := "/" + strings.Repeat("d", 80)
	_, err := Load("testdata/minimal.good.toml", opts("BROKER_RUNTIME_DIR="+long))
	if err == nil || !strings.Contains(err.Error(), `service[1] "zccache".socket (default): socket path`) ||
		!strings.Contains(err.Error(), "choose a shorter runtime_dir") {
		t.Errorf("err = %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load("testdata/nope.toml", opts())
	if err == nil || !strings.Contains(err.Error(), "testdata/nope.toml") {
		t.Errorf("err = %v", err)
	}
}
