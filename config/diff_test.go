package config

import (
	"slices"
	"testing"
	"time"
)

func reg(name string) Service {
	return Service{Name: name, Mode: ModeRegistered, Socket: "/run/" + name + ".sock", Version: "1.0.0",
		BackendEndpoint: "/run/" + name + "-be.sock", Verify: VerifyProbe, MaxConnections: 256}
}

func launch(name string) Service {
	return Service{Name: name, Mode: ModeLaunch, Socket: "/run/" + name + ".sock", MaxConnections: 256,
		StartTimeout: 10 * time.Second}
}

func with(s Service, f func(*Service)) Service { f(&s); return s }

func cfgOf(svcs ...Service) *Config {
	return &Config{Broker: Broker{LogLevel: "info", HelloTimeout: 30 * time.Second}, Services: svcs}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new *Config
		lines    []string
		effects  []Effect // Effect per Changed entry
	}{
		{name: "identical", old: cfgOf(reg("a"), launch("*")), new: cfgOf(reg("a"), launch("*")),
			lines: []string{"unchanged a", "unchanged *"}},
		{name: "added and removed", old: cfgOf(reg("a"), reg("b")), new: cfgOf(reg("b"), launch("c")),
			lines: []string{
				"removed a (registered, socket /run/a.sock, version 1.0.0, backend /run/a-be.sock, verify probe, max_connections 256)",
				"added c (launch, socket /run/c.sock, idle_timeout 0s, start_timeout 10s, max_connections 256)",
				"unchanged b",
			}},
		{name: "max_connections in place",
			old:   cfgOf(reg("a")),
			new:   cfgOf(with(reg("a"), func(s *Service) { s.MaxConnections = 512 })),
			lines: []string{"changed a: max_connections 256 → 512 (in place)"}, effects: []Effect{InPlace}},
		{name: "launch timeouts in place",
			old:   cfgOf(launch("*")),
			new:   cfgOf(with(launch("*"), func(s *Service) { s.IdleTimeout = time.Minute; s.StartTimeout = time.Second })),
			lines: []string{"changed *: idle_timeout 0s → 1m0s, start_timeout 10s → 1s (in place)"}, effects: []Effect{InPlace}},
		{name: "version brings a new backend",
			old:   cfgOf(reg("a")),
			new:   cfgOf(with(reg("a"), func(s *Service) { s.Version = "1.0.1"; s.MaxConnections = 1 })),
			lines: []string{"changed a: version 1.0.0 → 1.0.1, max_connections 256 → 1 (new backend, socket and connections kept)"}, effects: []Effect{NewBackend}},
		{name: "handoff enabled brings a new backend",
			old:   cfgOf(reg("a")),
			new:   cfgOf(with(reg("a"), func(s *Service) { s.HandoffEndpoint = "/run/h.sock" })),
			lines: []string{`changed a: handoff_endpoint "" → /run/h.sock (new backend, socket and connections kept)`}, effects: []Effect{NewBackend}},
		{name: "mode switch brings a new backend",
			old:     cfgOf(reg("a")),
			new:     cfgOf(with(launch("a"), func(s *Service) { s.Socket = "/run/a.sock" })),
			lines:   []string{`changed a: mode registered → launch, version 1.0.0 → "", backend_endpoint /run/a-be.sock → "", verify probe → "", start_timeout 0s → 10s (new backend, socket and connections kept)`},
			effects: []Effect{NewBackend}},
		{name: "socket rebinds, verify brings a new backend",
			old:     cfgOf(reg("a"), reg("b")),
			new:     cfgOf(with(reg("a"), func(s *Service) { s.Socket = "/run/x.sock" }), with(reg("b"), func(s *Service) { s.Verify = VerifyConnect })),
			lines:   []string{"changed a: socket /run/a.sock → /run/x.sock (rebind)", "changed b: verify probe → connect (new backend, socket and connections kept)"},
			effects: []Effect{Rebind, NewBackend}},
		{name: "broker keys",
			old: cfgOf(reg("a")),
			new: func() *Config {
				c := cfgOf(reg("a"))
				c.Broker.LogLevel, c.Broker.HelloTimeout = "debug", 5*time.Second
				return c
			}(),
			lines: []string{"broker: log_level info → debug (applied live)", "broker: hello_timeout 30s → 5s (applied live)", "unchanged a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Diff(tc.old, tc.new)
			if got := p.Lines(); !slices.Equal(got, tc.lines) {
				t.Errorf("lines\n got %q\nwant %q", got, tc.lines)
			}
			var effects []Effect
			for _, c := range p.Changed {
				effects = append(effects, c.Effect)
				if c.Old.Equal(c.New) || len(c.Fields) == 0 {
					t.Errorf("change %s without a difference", c.Name)
				}
			}
			if !slices.Equal(effects, tc.effects) {
				t.Errorf("effects = %v, want %v", effects, tc.effects)
			}
			wantEmpty := tc.name == "identical"
			if p.Empty() != wantEmpty {
				t.Errorf("Empty() = %v, want %v", p.Empty(), wantEmpty)
			}
			if back := Diff(tc.new, tc.new); !back.Empty() {
				t.Errorf("Diff(new, new) not empty: %q", back.Lines())
			}
		})
	}
}

// TestEqualCoversEveryField guards Equal against a field added to Service but not compared.
func TestEqualCoversEveryField(t *testing.T) {
	base := reg("a")
	for i, f := range []func(*Service){
		func(s *Service) { s.Name = "b" },
		func(s *Service) { s.Mode = ModeLaunch },
		func(s *Service) { s.Socket = "/x" },
		func(s *Service) { s.Version = "2.0.0" },
		func(s *Service) { s.BackendEndpoint = "/y" },
		func(s *Service) { s.HandoffEndpoint = "/z" },
		func(s *Service) { s.Verify = VerifyConnect },
		func(s *Service) { s.MaxConnections = 1 },
		func(s *Service) { s.IdleTimeout = 1 },
		func(s *Service) { s.StartTimeout = 1 },
	} {
		if base.Equal(with(base, f)) {
			t.Errorf("mutation %d not seen by Equal", i)
		}
	}
	if n := len(serviceFields) + 1; n != 10 { // + name, the key Diff matches on
		t.Errorf("serviceFields covers %d of 10 Service fields", n)
	}
}

// TestDiffLoaded diffs two real files: only the edited service changes.
func TestDiffLoaded(t *testing.T) {
	dir := t.TempDir()
	a, b := dir+"/a.toml", dir+"/b.toml"
	base := "[[service]]\nname = \"one\"\nmode = \"launch\"\n\n[[service]]\nname = \"two\"\nmode = \"launch\"\n"
	writeFile(t, a, base)
	writeFile(t, b, base+"max_connections = 9\n")
	ca, err := Load(a, opts())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Load(b, opts())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"changed two: max_connections 256 → 9 (in place)", "unchanged one"}
	if got := Diff(ca, cb).Lines(); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
