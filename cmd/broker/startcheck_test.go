package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

// setup is one broker directory for the check/run matrix: dir (0700) holds the config,
// the servicedef dir "defs", the runtime dir "run" and the sockets unless a case moves
// them.
type setup struct {
	t    *testing.T
	dir  string
	cfg  string
	defs string
}

func newSetup(t *testing.T) *setup {
	dir := testutil.ShortDir(t)
	s := &setup{t: t, dir: dir, cfg: filepath.Join(dir, "broker.toml"), defs: filepath.Join(dir, "defs")}
	if err := os.Mkdir(s.defs, 0o700); err != nil {
		t.Fatal(err)
	}
	return s
}

// write writes broker.toml: runtime_dir (default dir/run) and the services.
func (s *setup) write(runtimeDir string, services ...string) {
	if runtimeDir == "" {
		runtimeDir = filepath.Join(s.dir, "run")
	}
	body := fmt.Sprintf("[broker]\nservicedef_dir = %q\nruntime_dir = %q\nshutdown_grace = \"2s\"\n", s.defs, runtimeDir)
	for _, svc := range services {
		body += "\n" + svc
	}
	if err := os.WriteFile(s.cfg, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

func registered(name, socket, endpoint string) string {
	return fmt.Sprintf("[[service]]\nname = %q\nmode = \"registered\"\nversion = \"1.0.0\"\nbackend_endpoint = %q\nsocket = %q\n", name, endpoint, socket)
}

func launched(name, socket string) string {
	return fmt.Sprintf("[[service]]\nname = %q\nmode = \"launch\"\nsocket = %q\n", name, socket)
}

// launchDef installs <name>.servicedef with binary_path under bin (created when exe is
// true) and per_version_binary_dir pvbd.
func (s *setup) launchDef(name, binary, pvbd string, exe bool) {
	if exe {
		os.MkdirAll(filepath.Dir(binary), 0o700)
		if err := os.WriteFile(binary, []byte("#!/bin/sh\n"), 0o700); err != nil {
			s.t.Fatal(err)
		}
	}
	writeDef(s.t, s.defs, name+".servicedef", &wirepb.ServiceDefinition{ServiceName: name, BinaryPath: binary,
		PerVersionBinaryDir: pvbd, Isolation: wirepb.BrokerIsolation_PRIVATE_BROKER})
}

func (s *setup) mkdir(p string, mode os.FileMode) string {
	if err := os.MkdirAll(p, 0o700); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// runBinary runs the built broker (this test binary in its broker role) to its end.
func runBinary(t *testing.T, within time.Duration, args ...string) (int, string) {
	t.Helper()
	cmd, out := startProcess(t, []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=json"}, args...)
	code, _ := waitExit(t, cmd, within)
	return code, out.String()
}

// runOutcome starts `broker -c cfg` and returns its exit code and output: at once when it
// refuses to start, or 0 once it logged "broker started", was sent SIGTERM and stopped
// cleanly.
func runOutcome(t *testing.T, cfg string) (int, string) {
	t.Helper()
	cmd, out := startProcess(t, []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=json"}, "-c", cfg)
	exited := make(chan struct{})
	var state *os.ProcessState
	go func() { state, _ = cmd.Process.Wait(); close(exited) }()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case <-exited:
			return state.ExitCode(), out.String()
		case <-deadline:
			t.Fatalf("broker neither started nor exited:\n%s", out)
		case <-time.After(5 * time.Millisecond): // a poll interval, not a synchronisation
		}
		if strings.Contains(out.String(), `"message":"broker started"`) {
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return state.ExitCode(), out.String()
		}
	}
}

// TestCheckFailsExactlyWhenRunWould runs the built binary twice per broken setup, as
// `broker check -c FILE` and as `broker -c FILE`: check exits 1 naming the path and the
// reason exactly when run refuses to start (exit 1, naming the same), and both succeed on
// a setup that works.
func TestCheckFailsExactlyWhenRunWould(t *testing.T) {
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name  string
		root  bool                                 // needs root (chown, or the rule that applies to root)
		build func(s *setup) (path, reason string) // reason "" = works
	}{
		{"works", false, func(s *setup) (string, string) {
			s.write("", registered("echo", filepath.Join(s.dir, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return "", ""
		}},
		{"socket dir missing under runtime_dir is created", false, func(s *setup) (string, string) {
			s.write("", registered("echo", filepath.Join(s.dir, "run", "sub", "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return "", ""
		}},
		{"socket dir mode 0777", false, func(s *setup) (string, string) {
			d := s.mkdir(filepath.Join(s.dir, "open"), 0o777)
			s.write("", registered("echo", filepath.Join(d, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return d, "has mode 0777"
		}},
		{"socket dir mode 0755", false, func(s *setup) (string, string) {
			d := s.mkdir(filepath.Join(s.dir, "readable"), 0o755)
			s.write("", registered("echo", filepath.Join(d, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return d, "has mode 0755"
		}},
		{"socket dir owned by another uid", true, func(s *setup) (string, string) {
			d := s.mkdir(filepath.Join(s.dir, "theirs"), 0o700)
			if err := os.Chown(d, 65534, 65534); err != nil {
				s.t.Fatal(err)
			}
			s.write("", registered("echo", filepath.Join(d, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return d, "is owned by uid 65534"
		}},
		{"socket dir is a symlink", false, func(s *setup) (string, string) {
			real := s.mkdir(filepath.Join(s.dir, "real"), 0o700)
			link := filepath.Join(s.dir, "link")
			os.Symlink(real, link)
			s.write("", registered("echo", filepath.Join(link, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return link, "is a symlink"
		}},
		{"regular file at the socket path", false, func(s *setup) (string, string) {
			p := filepath.Join(s.dir, "echo.sock")
			os.WriteFile(p, []byte("x"), 0o600)
			s.write("", registered("echo", p, filepath.Join(s.dir, "be.sock")))
			return p, "exists and is not a socket"
		}},
		{"socket path in use by a live process", false, func(s *setup) (string, string) {
			p := filepath.Join(s.dir, "echo.sock")
			ln, err := net.Listen("unix", p)
			if err != nil {
				s.t.Fatal(err)
			}
			s.t.Cleanup(func() { ln.Close() })
			s.write("", registered("echo", p, filepath.Join(s.dir, "be.sock")))
			return p, "in use by pid " + strconv.Itoa(os.Getpid())
		}},
		{"socket dir missing outside runtime_dir, as root", true, func(s *setup) (string, string) {
			d := filepath.Join(s.dir, "nowhere", "deep")
			s.write("", registered("echo", filepath.Join(d, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return d, "creates directories only under runtime_dir"
		}},
		{"runtime dir below a file", false, func(s *setup) (string, string) {
			f := filepath.Join(s.dir, "file")
			os.WriteFile(f, nil, 0o600)
			s.write(filepath.Join(f, "run"), registered("echo", filepath.Join(s.dir, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return f, "is not a directory"
		}},
		{"launch binary missing", false, func(s *setup) (string, string) {
			bin := s.mkdir(filepath.Join(s.dir, "bin"), 0o700)
			s.launchDef("zc", filepath.Join(bin, "1.0.0", "zc"), bin, false)
			s.write("", launched("zc", filepath.Join(s.dir, "zc.sock")))
			return filepath.Join(bin, "1.0.0", "zc"), "does not exist"
		}},
		{"launch binary outside per_version_binary_dir", false, func(s *setup) (string, string) {
			bin := s.mkdir(filepath.Join(s.dir, "bin"), 0o700)
			s.launchDef("zc", filepath.Join(s.dir, "elsewhere", "zc"), bin, true)
			s.write("", launched("zc", filepath.Join(s.dir, "zc.sock")))
			return filepath.Join(s.dir, "elsewhere", "zc"), "outside per_version_binary_dir"
		}},
		{"launch binary under per_version_binary_dir works", false, func(s *setup) (string, string) {
			bin := s.mkdir(filepath.Join(s.dir, "bin"), 0o700)
			s.launchDef("zc", filepath.Join(bin, "1.0.0", "zc"), bin, true)
			s.write("", launched("zc", filepath.Join(s.dir, "zc.sock")))
			return "", ""
		}},
		{"a definition run would reject", false, func(s *setup) (string, string) {
			writeDef(s.t, s.defs, "echo.servicedef", &wirepb.ServiceDefinition{ServiceName: "other", BinaryPath: "/bin/true"})
			s.write("", registered("echo", filepath.Join(s.dir, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return filepath.Join(s.defs, "echo.servicedef"), "does not match the file name"
		}},
		{"servicedef dir mode 0755", false, func(s *setup) (string, string) {
			os.Chmod(s.defs, 0o755)
			s.write("", registered("echo", filepath.Join(s.dir, "echo.sock"), filepath.Join(s.dir, "be.sock")))
			return s.defs, "lets group/others in"
		}},
		{"invalid config", false, func(s *setup) (string, string) {
			s.write("", "[[service]]\nname = \"zc\"\nmode = \"lanch\"\n")
			return s.cfg, "is not one of registered, launch"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && !root {
				t.Skip("needs root")
			}
			s := newSetup(t)
			path, reason := tc.build(s)
			want := 0
			if reason != "" {
				want = 1
			}
			checkCode, checkOut := runBinary(t, 15*time.Second, "check", "-c", s.cfg)
			runCode, runOut := runOutcome(t, s.cfg)
			if checkCode != want || runCode != want {
				t.Fatalf("check exit %d, run exit %d; want both %d\ncheck:\n%s\nrun:\n%s", checkCode, runCode, want, checkOut, runOut)
			}
			if want == 0 {
				// "broker started" comes once every socket is bound: version, config, sockets.
				for _, w := range []string{`"version":"`, `"config":"` + s.cfg, `"sockets":["`} {
					if !strings.Contains(runOut, w) {
						t.Errorf("broker started lacks %s:\n%s", w, runOut)
					}
				}
				return
			}
			for who, out := range map[string]string{"check": checkOut, "run": runOut} {
				if !strings.Contains(out, path) || !strings.Contains(out, reason) {
					t.Errorf("%s does not name %s and %q:\n%s", who, path, reason, out)
				}
			}
		})
	}
}

// TestSecondBrokerNamesThePid: a second broker on the same config exits 1 at once,
// naming the pid that serves the socket (SO_PEERCRED); `broker check` on that config is
// fine (a note naming the same pid), as `nginx -t` is while nginx runs.
func TestSecondBrokerNamesThePid(t *testing.T) {
	s := newSetup(t)
	sock := filepath.Join(s.dir, "echo.sock")
	s.write("", registered("echo", sock, filepath.Join(s.dir, "be.sock")))
	first, _ := startProcess(t, []string{envRunBroker + "=1", "RP_BROKER_LOG_FORMAT=json"}, "-c", s.cfg)
	testutil.WaitFor(t, "the first broker to serve", func() bool { return dialable(sock) })
	pid := "pid " + strconv.Itoa(first.Process.Pid)

	code, out := runOutcome(t, s.cfg)
	if code != 1 || !strings.Contains(out, "in use by "+pid) || !strings.Contains(out, `service \"echo\"`) {
		t.Fatalf("second broker: exit %d, want 1 naming service \"echo\" and %s:\n%s", code, pid, out)
	}
	if !dialable(sock) {
		t.Fatal("the second broker took the first one's socket away")
	}
	code, out = runBinary(t, 15*time.Second, "check", "-c", s.cfg)
	if code != 0 || !strings.Contains(out, "served by a running broker ("+pid+")") {
		t.Fatalf("check against a running broker: exit %d\n%s", code, out)
	}
}

// A bad definition that only a "*" service reaches costs that service's Hellos, not the
// start: check says so and exits 0, and run starts, as it does when the file goes bad
// while the broker runs. A bad definition of a named service stops both (the matrix above).
func TestWildcardBadDefinitionOnlyWarns(t *testing.T) {
	s := newSetup(t)
	writeDef(t, s.defs, "stray.servicedef", &wirepb.ServiceDefinition{ServiceName: "other", BinaryPath: "/bin/true"})
	s.write("", launched("*", filepath.Join(s.dir, "shared.sock")))
	checkCode, checkOut := runBinary(t, 15*time.Second, "check", "-c", s.cfg)
	runCode, runOut := runOutcome(t, s.cfg)
	if checkCode != 0 || runCode != 0 {
		t.Fatalf("check exit %d, run exit %d; want both 0\ncheck:\n%s\nrun:\n%s", checkCode, runCode, checkOut, runOut)
	}
	for _, w := range []string{filepath.Join(s.defs, "stray.servicedef"), "does not match the file name", "Hellos for this service are refused"} {
		if !strings.Contains(checkOut, w) {
			t.Errorf("check output lacks %q:\n%s", w, checkOut)
		}
	}
}
