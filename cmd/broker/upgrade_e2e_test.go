package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/upgrade"
)

// TestUpgradeInPlaceUnderLoad (issue 13, "Measured"): 16 clients loop Hellos on a
// registered and a launch service while the broker upgrades 3 times: no Hello fails, the
// pid, the sockets' inodes and the backends' pids stay, the generation is 3, and a
// launched backend killed afterwards is respawned.
func TestUpgradeInPlaceUnderLoad(t *testing.T) {
	u := startUpgradeBroker(t)
	before := u.status()
	inodes := map[string]uint64{"alpha": inode(t, u.sock("alpha")), "star": inode(t, u.sock("star"))}
	launched := launchedPID(before)
	if before.BrokerPID != u.cmd.Process.Pid || before.Generation != 0 || launched == 0 {
		t.Fatalf("before: pid %d (started %d), generation %d, launched backend %d", before.BrokerPID, u.cmd.Process.Pid, before.Generation, launched)
	}

	h := startHammer(u, 16)
	for i := 1; i <= 3; i++ {
		testutil.WaitFor(t, "Hellos between upgrades", func() bool { return h.ok.Load() >= int64(100*i) })
		out, errOut, code := u.upgrade()
		if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d,", i)) {
			h.end()
			t.Fatalf("upgrade %d: exit %d\nstdout: %s\nstderr: %s\nbroker:\n%s", i, code, out, errOut, u.out.String())
		}
	}
	testutil.WaitFor(t, "Hellos after the last upgrade", func() bool { return h.ok.Load() >= 400 })
	h.end()
	if n := h.failed.Load(); n > 0 {
		t.Fatalf("%d of %d Hellos failed across the upgrades; first: %v", n, n+h.ok.Load(), h.errs[:min(len(h.errs), 5)])
	}
	t.Logf("%d Hellos, none failed, across 3 upgrades", h.ok.Load())

	after := u.status()
	if after.BrokerPID != before.BrokerPID || after.Generation != 3 || launchedPID(after) != launched {
		t.Fatalf("after: pid %d generation %d launched %d; want pid %d generation 3 launched %d",
			after.BrokerPID, after.Generation, launchedPID(after), before.BrokerPID, launched)
	}
	for name, ino := range inodes {
		if got := inode(t, u.sock(name)); got != ino {
			t.Errorf("socket %s: inode %d after the upgrades, %d before", name, got, ino)
		}
	}
	if b, _ := os.ReadFile(u.events); strings.Count(string(b), "upgraded in place") != 3 {
		t.Errorf("event log holds %d upgrade events, want 3", strings.Count(string(b), "upgraded in place"))
	}

	// Still supervised by the third image: killed, it is reaped and the next Hello starts
	// a new one.
	if err := syscall.Kill(launched, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "a respawned launched backend", func() bool {
		return hello(u.sock("star"), "echo-launch") == nil && launchedPID(u.status()) != 0 && launchedPID(u.status()) != launched
	})
}

// TestUpgradeRefusesBrokenBinary (issue 13, "Measured"): a new binary that fails its
// pre-check is refused with its reason, and the broker keeps serving, untouched.
func TestUpgradeRefusesBrokenBinary(t *testing.T) {
	u := startUpgradeBroker(t)
	before := u.status()
	script := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(u.dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, binary, want string
	}{
		{"exits 1", script("exit1", "#!/bin/sh\necho 'config: unknown key \"frobnicate\"' >&2\nexit 1\n", 0o755), `config: unknown key "frobnicate"`},
		{"not executable", script("noexec", "#!/bin/sh\nexit 0\n", 0o644), "not executable"},
		// What a broker reading an older state format answers the pre-check (upgrade-check).
		{"different state format", script("oldformat", "#!/bin/sh\necho 'version 0.9.0'\n"+
			"echo 'broker upgrade-check: state: state format is newer than this broker understands: the state is format v1, this broker reads up to v0' >&2\nexit 1\n", 0o755),
			"state format is newer than this broker understands"},
		{"missing", filepath.Join(u.dir, "nope"), "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := u.upgrade("--binary", tc.binary)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("upgrade with %s: exit %d, stdout %q, stderr %q; want exit 1 naming %q", tc.binary, code, out, errOut, tc.want)
			}
			if err := hello(u.sock("alpha"), "alpha"); err != nil {
				t.Fatalf("alpha after a refused upgrade: %v", err)
			}
			if err := hello(u.sock("star"), "echo-launch"); err != nil {
				t.Fatalf("echo-launch after a refused upgrade: %v", err)
			}
			st := u.status()
			if st.BrokerPID != before.BrokerPID || st.Generation != 0 || launchedPID(st) != launchedPID(before) {
				t.Fatalf("after a refused upgrade: pid %d generation %d launched %d", st.BrokerPID, st.Generation, launchedPID(st))
			}
		})
	}
}

// TestUpgradeOnSIGUSR2: the signal upgrades like the command does.
func TestUpgradeOnSIGUSR2(t *testing.T) {
	u := startUpgradeBroker(t)
	before := u.status()
	if err := u.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "generation 1 after SIGUSR2", func() bool {
		st := u.status()
		return st.Generation == 1 && st.Upgrade != nil && st.Upgrade.OK
	})
	after := u.status()
	if after.BrokerPID != before.BrokerPID || launchedPID(after) != launchedPID(before) {
		t.Fatalf("after SIGUSR2: pid %d launched %d; before pid %d launched %d", after.BrokerPID, launchedPID(after), before.BrokerPID, launchedPID(before))
	}
	if err := hello(u.sock("alpha"), "alpha"); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFailureAfterExec: a new image that cannot restore the state exits non-zero
// with the reason on stderr and in the event log. The new binary here passes its
// pre-check but loses the state descriptor on its way in (a wrapper points the broker at
// another descriptor before it execs it), which the pre-check cannot see.
func TestUpgradeFailureAfterExec(t *testing.T) {
	u := startUpgradeBroker(t)
	launched := launchedPID(u.status())
	wrapper := filepath.Join(u.dir, "broker-wrapper")
	body := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" != %s ]; then export %s=999; fi\nexec %q \"$@\"\n",
		upgrade.CheckCommand, upgrade.EnvStateFD, os.Args[0])
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := u.upgrade("--binary", wrapper)
	if code != 1 || !strings.Contains(errOut, "exited during the upgrade") {
		t.Fatalf("upgrade: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _ := waitExit(u.t.(*testing.T), u.cmd, 10*time.Second); code == 0 {
		t.Fatalf("the new image exited 0")
	}
	if !strings.Contains(u.out.String(), "upgrade in place failed after the exec") || !strings.Contains(u.out.String(), "bad file descriptor") {
		t.Fatalf("stderr of the broker lacks the reason:\n%s", u.out.String())
	}
	if b, _ := os.ReadFile(u.events); !strings.Contains(string(b), "the new image could not restore") {
		t.Fatalf("event log lacks the failure:\n%s", b)
	}
	// Its launched backend dies with it, as with any broker exit.
	testutil.WaitFor(t, "the launched backend to die with the broker", func() bool { return processGone(launched) })
}
