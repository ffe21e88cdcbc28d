package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CheckCommand is the new binary's pre-check mode: `broker upgrade-check -c FILE
// --state-fd 3` (cmd/broker).
const CheckCommand = "upgrade-check"

// DefaultPrecheckTimeout bounds the pre-check child: loading a config and reading a state
// takes milliseconds; a binary that hangs is refused.
const DefaultPrecheckTimeout = 10 * time.Second

// maxPrecheckOutput bounds what is kept of the child's output.
const maxPrecheckOutput = 64 << 10

// Prechecked is what the new binary said about itself.
type Prechecked struct {
	Version string
	BuildID string
}

// Precheck runs binary in its check mode, before anything changes: it must load and
// validate the config at cfgPath and understand state (an encoded state, as the running
// broker would hand over). Any failure is an error carrying the reason (the child's
// stderr), and the running broker is untouched. env is the child's environment.
func Precheck(ctx context.Context, binary, cfgPath string, state []byte, env []string) (Prechecked, error) {
	if err := executable(binary); err != nil {
		return Prechecked{}, err
	}
	mfd, err := WriteMemfd(state)
	if err != nil {
		return Prechecked{}, err
	}
	defer mfd.Close()
	ctx, cancel := context.WithTimeout(ctx, DefaultPrecheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, CheckCommand, "-c", cfgPath, "--state-fd", "3")
	cmd.Env = withoutVar(env, EnvStateFD)
	cmd.ExtraFiles = []*os.File{mfd}
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		return Prechecked{}, fmt.Errorf("new binary %s: pre-check did not finish in time (at most %s)", binary, DefaultPrecheckTimeout)
	}
	if err != nil {
		why := strings.TrimSpace(stderr.String())
		if why == "" {
			why = "(no output)"
		}
		return Prechecked{}, fmt.Errorf("new binary %s refused the upgrade (%v): %s", binary, err, why)
	}
	var p Prechecked
	sc := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "version":
			p.Version = v
		case "build":
			p.BuildID = v
		}
	}
	if p.Version == "" {
		return Prechecked{}, fmt.Errorf("new binary %s: pre-check printed no version: %q", binary, stdout.String())
	}
	return p, nil
}

// executable refuses early, with a reason a person can act on, a path that cannot be
// executed at all.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("new binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("new binary %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("new binary %s: not executable (mode %s): %w", path, fi.Mode().Perm(), err)
	}
	return nil
}

// capped keeps the first maxPrecheckOutput bytes written to it.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxPrecheckOutput - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
