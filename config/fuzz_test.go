package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/wire/names"
)

// FuzzLoad feeds arbitrary files to Load: it must not panic, and whatever it accepts must
// be a config the rest of the broker can trust.
func FuzzLoad(f *testing.F) {
	path := filepath.Join(f.TempDir(), "broker.toml")
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path, opts("BROKER_LOG_LEVEL=debug"))
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(cfg.Services) == 0 {
			t.Fatal("accepted a config without services")
		}
		sockets := map[string]bool{}
		for _, s := range cfg.Services {
			if s.Name != AnyService && !names.ValidService(s.Name) || s.Name == AnyService && s.Mode != ModeLaunch {
				t.Fatalf("accepted service name %q in mode %q", s.Name, s.Mode)
			}
			if !filepath.IsAbs(s.Socket) || len(s.Socket) > names.MaxSocketPath || sockets[s.Socket] {
				t.Fatalf("accepted socket %q", s.Socket)
			}
			sockets[s.Socket] = true
			if s.MaxConnections < 1 || s.Mode == ModeRegistered && (!names.ValidVersion(s.Version) || !filepath.IsAbs(s.BackendEndpoint)) {
				t.Fatalf("accepted service %+v", s)
			}
		}
		if p := Diff(cfg, cfg); !p.Empty() {
			t.Fatalf("Diff(cfg, cfg) = %q", p.Lines())
		}
	})
}
