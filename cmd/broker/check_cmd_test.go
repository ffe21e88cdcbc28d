package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// checkFixture is a servicedef dir (0700) and a config using it, with explicit sockets so
// runCheck needs no machine id.
func checkFixture(t *testing.T, services string) (cfgPath, defDir string) {
	t.Helper()
	dir := t.TempDir()
	defDir = filepath.Join(dir, "services")
	if err := os.Mkdir(defDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "broker.toml")
	services = strings.ReplaceAll(services, "DIR", dir)
	body := "[broker]\nservicedef_dir = \"" + defDir + "\"\nruntime_dir = \"" + dir + "\"\n\n" + services
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, defDir
}

func writeDef(t *testing.T, dir, file string, def *wirepb.ServiceDefinition) {
	t.Helper()
	b, err := servicedef.Encode(def)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

const twoServices = `[[service]]
name = "echo"
mode = "registered"
socket = "DIR/echo.sock"
version = "1.0.0"
backend_endpoint = "DIR/echo-be.sock"
handoff_endpoint = "DIR/echo-ho.sock"

[[service]]
name = "*"
mode = "launch"
socket = "DIR/shared.sock"
max_connections = 1024
`

func TestRunCheck(t *testing.T) {
	// goodDef's binary is a real executable under its per_version_binary_dir.
	goodDef := func(t *testing.T, defDir, name string) *wirepb.ServiceDefinition {
		bin := filepath.Join(filepath.Dir(defDir), "bin")
		exe := filepath.Join(bin, "1.0.0", name)
		os.MkdirAll(filepath.Dir(exe), 0o700)
		if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return &wirepb.ServiceDefinition{ServiceName: name, BinaryPath: exe,
			PerVersionBinaryDir: bin, Isolation: wirepb.BrokerIsolation_PRIVATE_BROKER}
	}
	for _, tc := range []struct {
		name       string
		args       func(cfg string) []string
		setup      func(t *testing.T, defDir string)
		code       int
		stdout     []string
		stderr     []string
		services   string // default twoServices
		loadConfig bool
	}{
		{name: "no flags", args: func(string) []string { return nil }, code: 2, stderr: []string{"want exactly -c FILE"}},
		{name: "help", args: func(string) []string { return []string{"--help"} }, code: 0, stdout: []string{"usage: broker check -c FILE"}},
		{name: "unknown flag", args: func(string) []string { return []string{"-x"} }, code: 2, stderr: []string{"flag provided but not defined: -x"}},
		{name: "extra argument", args: func(c string) []string { return []string{"-c", c, "more"} }, code: 2, stderr: []string{"want exactly -c FILE"}},
		{name: "missing file", args: func(c string) []string { return []string{"-c", c + ".nope"} }, code: 1, stderr: []string{"broker.toml.nope"}},
		{name: "plan with servicedefs", code: 0,
			setup: func(t *testing.T, d string) {
				writeDef(t, d, "echo.servicedef", goodDef(t, d, "echo"))
				writeDef(t, d, "zccache.servicedef", goodDef(t, d, "zccache"))
			},
			stdout: []string{
				"/echo.sock",
				"/echo-be.sock",
				"/echo-ho.sock",
				"version           1.0.0",
				"/shared.sock",
				"max_connections   1024",
				"hello_timeout     30s",
				"echo     ok: PRIVATE_BROKER, binary ",
				"zccache  ok: PRIVATE_BROKER, binary ",
				`service "echo"`, `servicedef "zccache"`,
				"broker.toml: ok",
			}},
		{name: "long flag and missing servicedef", args: func(c string) []string { return []string{"--config=" + c} }, code: 0,
			stdout: []string{"echo  not installed: optional for a registered service"}},
		// A bad definition of a named service stops the start; one only "*" reaches is a
		// note (that service's Hellos are refused until it is fixed).
		{name: "invalid servicedef", code: 1,
			setup: func(t *testing.T, d string) {
				writeDef(t, d, "echo.servicedef", goodDef(t, d, "other"))
				writeDef(t, d, "zccache.servicedef", goodDef(t, d, "other"))
				if err := os.WriteFile(filepath.Join(d, "junk.servicedef"), []byte{0xff, 0xff, 0xff}, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			stdout: []string{"echo     INVALID", "zccache  INVALID", "junk     INVALID",
				"Hellos for this service are refused until the file is fixed"},
			stderr: []string{
				`echo.servicedef: service_name "other" does not match the file name`,
				"1 problem(s); `broker run` would refuse to start",
			}},
		{name: "launch without per_version_binary_dir", code: 0,
			setup: func(t *testing.T, d string) {
				writeDef(t, d, "zccache.servicedef", &wirepb.ServiceDefinition{ServiceName: "zccache", BinaryPath: "/usr/bin/zccache"})
			},
			stdout: []string{"zccache  INVALID", `servicedef "zccache"  note: per_version_binary_dir is not set: the broker starts`}},
		{name: "insecure servicedef dir", code: 1,
			setup: func(t *testing.T, d string) {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			stderr: []string{"lets group/others in"}},
		{name: "invalid config", code: 1,
			services: "[[service]]\nname = \"zccache\"\nmode = \"lanch\"\n",
			stderr:   []string{`broker.toml: service[1] "zccache".mode: "lanch" is not one of registered, launch`, "invalid, nothing would start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs := tc.services
			if svcs == "" {
				svcs = twoServices
			}
			cfg, defDir := checkFixture(t, svcs)
			if tc.setup != nil {
				tc.setup(t, defDir)
			}
			args := []string{"-c", cfg}
			if tc.args != nil {
				args = tc.args(cfg)
			}
			var out, errb bytes.Buffer
			code := runCheck(context.Background(), args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &out, &errb)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &out)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &errb)
				}
			}
		})
	}
}

// TestCheckExample runs `broker check -c broker.toml.example` as a fresh user would, with a
// fixed user hash so the test needs no machine id.
func TestCheckExample(t *testing.T) {
	home := t.TempDir()
	var out, errb bytes.Buffer
	code := check(context.Background(), []string{"-c", "../../broker.toml.example"}, &out, &errb, config.LoadOptions{
		Environ: []string{"HOME=" + home},
		Layout:  func(dir string) (names.Layout, error) { return names.Layout{Dir: dir, SID: "0123456789abcdef"}, nil },
	})
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &out, &errb)
	}
	for _, w := range []string{"rpb-v1-0123456789abcdef-svc-echo.sock", "rpb-v1-0123456789abcdef-shared.sock",
		home + "/.config/running-process/services", "directory missing"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("stdout lacks %q:\n%s", w, &out)
		}
	}
}
