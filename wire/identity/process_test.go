package identity_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/identity"
)

func TestProbeAndVerifySeparateProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ep := filepath.Join(testutil.ShortDir(t), "be.sock")
	cmd := exec.Command(exe)
	startChild(t, cmd, ep)

	var h identity.Hasher
	got, err := identity.ProbeAndVerify(context.Background(), ep, &h, 0)
	if err != nil {
		t.Fatal(err)
	}
	realExe, err := filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := identity.HashFile(realExe)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case int(got.Pid) != cmd.Process.Pid:
		t.Errorf("pid %d, want child %d", got.Pid, cmd.Process.Pid)
	case got.ExePath != realExe:
		t.Errorf("exe_path %q, want %q", got.ExePath, realExe)
	case string(got.ExeHash) != string(sum[:]):
		t.Errorf("exe_hash differs from the file's BLAKE3")
	case got.IpcEndpoint.GetPath() != ep:
		t.Errorf("endpoint %q, want %q", got.IpcEndpoint.GetPath(), ep)
	}

	// A launcher passes the child pid explicitly; a wrong pid is named.
	if _, err := identity.ProbeAndVerify(context.Background(), ep, &h, cmd.Process.Pid); err != nil {
		t.Fatalf("explicit child pid: %v", err)
	}
	_, err = identity.ProbeAndVerify(context.Background(), ep, &h, os.Getpid())
	if err == nil || !strings.HasSuffix(err.Error(), "endpoint probe response identity did not match expected daemon identity: pid") {
		t.Fatalf("wrong expected pid: %v", err)
	}
}

// A binary replaced on disk while running still verifies: both sides hash the running
// image through /proc/<pid>/exe.
func TestProbeAndVerifyReplacedBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := testutil.ShortDir(t)
	bin := filepath.Join(dir, "backend")
	testutil.CopyFile(t, exe, bin, 0o755)
	want, err := identity.HashFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	ep := filepath.Join(dir, "be.sock")
	startChild(t, exec.Command(bin), ep)

	repl := filepath.Join(dir, "backend.new")
	if err := os.WriteFile(repl, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(repl, bin); err != nil {
		t.Fatal(err)
	}
	got, err := identity.ProbeAndVerify(context.Background(), ep, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.ExeHash) != string(want[:]) {
		t.Errorf("hash is not the running image's")
	}
	if got.ExePath != bin {
		t.Errorf("exe_path %q, want the path it was started from %q", got.ExePath, bin)
	}
}

// CheckConnect and ProbeAndVerify reject a listener bound by another uid. Needs root to
// start one.
func TestForeignUIDRejected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as nobody")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := testutil.ShortDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// The go-build directory is private to us: give nobody a copy it can execute.
	bin := filepath.Join(dir, "backend")
	testutil.CopyFile(t, exe, bin, 0o755)
	ep := filepath.Join(dir, "be.sock")
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	startChild(t, cmd, ep)

	_, err = identity.CheckConnect(context.Background(), ep)
	mustIs(t, err, identity.ErrForeignUID)
	res, err := identity.Probe(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	if res.PeerUID != 65534 || res.PeerPID != cmd.Process.Pid {
		t.Fatalf("peer uid %d pid %d, want 65534 %d", res.PeerUID, res.PeerPID, cmd.Process.Pid)
	}
	// A backend of another user fails verification even though its answer is honest.
	_, err = identity.ProbeAndVerify(context.Background(), ep, nil, 0)
	mustIs(t, err, identity.ErrForeignUID)
}
