package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// rig is one private broker: its temp dir (config, servicedefs, runtime dir, backend
// binaries) and the running child. Every fault builds its own, so no state leaks
// between faults.
type rig struct {
	env     *runEnv
	dir     string // private temp dir, removed by close
	run     string // runtime_dir (sockets)
	defs    string // servicedef_dir
	bin     string // per_version_binary_dir
	cfgPath string

	cmd    *exec.Cmd
	exited chan struct{}
	log    *logTail
}

// newRig makes the directory tree; nothing runs yet.
func newRig(env *runEnv, name string) (*rig, error) {
	dir, err := os.MkdirTemp("", "rpbf-")
	if err != nil {
		return nil, fmt.Errorf("%s: temp dir: %w", name, err)
	}
	r := &rig{env: env, dir: dir, run: filepath.Join(dir, "run"), defs: filepath.Join(dir, "defs"),
		bin: filepath.Join(dir, "bin"), cfgPath: filepath.Join(dir, "broker.toml"),
		log: &logTail{name: name, verbose: env.verbose, out: env.stderr}}
	for _, d := range []string{r.run, r.defs, filepath.Join(r.bin, "1.0.0")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return r, nil
}

// sock is the path of a control socket in the rig's runtime dir.
func (r *rig) sock(name string) string { return filepath.Join(r.run, name+".sock") }

// writeConfig writes broker.toml: a fixed [broker] table, then the given [[service]]
// tables verbatim.
func (r *rig) writeConfig(services ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "[broker]\nservicedef_dir = %q\nruntime_dir = %q\nevent_log = %q\n",
		r.defs, r.run, filepath.Join(r.dir, "events.log"))
	b.WriteString("log_format = \"text\"\nlog_level = \"info\"\nhello_timeout = \"60s\"\n" +
		"hello_rate_limit = 0\nshutdown_grace = \"2s\"\n")
	for _, s := range services {
		b.WriteString("\n[[service]]\n" + s + "\n")
	}
	return writeAtomic(r.cfgPath, []byte(b.String()))
}

// installBackend copies this program into the binary dir under role (its argv[0]
// picks the backend behaviour) and writes <service>.servicedef for it.
func (r *rig) installBackend(service, role string) error {
	dst := filepath.Join(r.bin, "1.0.0", role)
	if _, err := os.Stat(dst); errors.Is(err, os.ErrNotExist) {
		if err := copyFile(r.env.self, dst); err != nil {
			return fmt.Errorf("install backend %s: %w", role, err)
		}
	}
	return r.writeDef(service, dst)
}

// writeDef writes a shared-isolation definition for service, atomically (rename).
func (r *rig) writeDef(service, binary string) error {
	b, err := wire.Marshal(&wirepb.ServiceDefinition{
		ServiceName: service, BinaryPath: binary, PerVersionBinaryDir: r.bin,
		Isolation: wirepb.BrokerIsolation_SHARED_BROKER,
	})
	if err != nil {
		return fmt.Errorf("encode %s.servicedef: %w", service, err)
	}
	return writeAtomic(filepath.Join(r.defs, service+".servicedef"), b)
}

// start runs the broker and waits until every socket in socks accepts a connection.
func (r *rig) start(ctx context.Context, socks ...string) error {
	r.cmd = exec.Command(r.env.broker, "run", "-c", r.cfgPath)
	r.cmd.Env = cleanEnv()
	r.cmd.Dir = r.dir
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("broker output pipe: %w", err)
	}
	r.cmd.Stdout, r.cmd.Stderr = pw, pw
	err = r.cmd.Start()
	pw.Close() // the child holds its copy
	if err != nil {
		pr.Close()
		return fmt.Errorf("start broker: %w", err)
	}
	r.exited = make(chan struct{})
	done := make(chan struct{})
	go func() { r.log.consume(pr); pr.Close(); close(done) }()
	go func() {
		r.cmd.Wait()
		select { // a grandchild holding the pipe must not keep us waiting
		case <-done:
		case <-time.After(2 * time.Second):
		}
		close(r.exited)
	}()
	return waitUntil(ctx, 10*time.Second, func() error {
		select {
		case <-r.exited:
			return fmt.Errorf("broker exited at start: %s", r.log.last())
		default:
		}
		for _, s := range socks {
			c, err := net.DialTimeout("unix", s, time.Second)
			if err != nil {
				return fmt.Errorf("broker not serving %s: %w", s, err)
			}
			c.Close()
		}
		return nil
	})
}

func (r *rig) pid() int { return r.cmd.Process.Pid }

// close stops the broker (SIGTERM, SIGKILL after 10 s) and removes the temp dir.
func (r *rig) close() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
		}
	}
	os.RemoveAll(r.dir)
}

// cleanEnv is our environment without BROKER_* and RUNNING_PROCESS_* variables, so the
// broker takes every setting from the rig's broker.toml.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BROKER_") || strings.HasPrefix(kv, "RUNNING_PROCESS_") ||
			strings.HasPrefix(kv, "RP_BROKER_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// logTail keeps the broker's recent output lines (for error messages and for waiting
// on a log line) and echoes them with -v.
type logTail struct {
	name    string
	verbose bool
	out     io.Writer

	mu    sync.Mutex
	lines []string
}

const logTailKeep = 400

func (l *logTail) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		l.mu.Lock()
		l.lines = append(l.lines, line)
		if len(l.lines) > logTailKeep {
			l.lines = l.lines[len(l.lines)-logTailKeep:]
		}
		l.mu.Unlock()
		if l.verbose {
			fmt.Fprintf(l.out, "  [%s broker] %s\n", l.name, line)
		}
	}
	io.Copy(io.Discard, r)
}

// contains reports whether a kept line holds s.
func (l *logTail) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

func (l *logTail) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return "(no output)"
	}
	return l.lines[len(l.lines)-1]
}
