package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpbroker/broker/internal/testutil"
)

func TestDoctor(t *testing.T) {
	e := newE2E(t)
	e.startBackend()
	e.writeConfig("", "alpha")
	e.startBroker()
	testutil.WaitFor(t, "alpha to negotiate", func() bool { return hello(e.sock("alpha"), "alpha") == nil })

	var out, errb bytes.Buffer
	if code := runDoctor(context.Background(), []string{"-c", e.cfg}, &out, &errb); code != 0 {
		t.Fatalf("healthy setup: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"ok       runtime_dir", `note     service "alpha"`, "served by a running broker (pid ", "broker answers on " + e.sock("alpha") + ": ready", "service alpha backend", "verified (probe)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}

	// A corrupt definition of a service the config names is a problem (run would refuse
	// to start): exit 1; one no service uses is a note.
	defs := filepath.Join(e.dir, "defs")
	os.WriteFile(filepath.Join(defs, "alpha.servicedef"), []byte{0xff, 0xff}, 0o600)
	os.WriteFile(filepath.Join(defs, "unused.servicedef"), []byte{0xff, 0xff}, 0o600)
	out.Reset()
	if code := runDoctor(context.Background(), []string{"-c", e.cfg}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), `PROBLEM  servicedef "alpha"`) || !strings.Contains(out.String(), "note     servicedef unused.servicedef") {
		t.Fatalf("corrupt servicedef: exit %d\n%s", code, out.String())
	}
	os.Remove(filepath.Join(defs, "alpha.servicedef"))
	os.Remove(filepath.Join(defs, "unused.servicedef"))
	os.Chmod(defs, 0o755)
	out.Reset()
	if code := runDoctor(context.Background(), []string{"-c", e.cfg}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "chmod 700") {
		t.Fatalf("open servicedef dir: exit %d\n%s", code, out.String())
	}
	if code := runDoctor(context.Background(), []string{"--bogus"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
}
