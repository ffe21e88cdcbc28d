package upgrade

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
)

// envNewBin selects how the test binary behaves as the new broker binary: "ok" (the real
// state check, as cmd/broker's upgrade-check runs it), "fail" or "hang".
const envNewBin = "UPGRADE_TEST_NEWBIN"

func runNewBinary() int {
	args := os.Args[1:]
	if len(args) != 5 || args[0] != CheckCommand || args[1] != "-c" || args[3] != "--state-fd" || args[4] != "3" {
		fmt.Fprintf(os.Stderr, "bad arguments %q\n", args)
		return 2
	}
	switch os.Getenv(envNewBin) {
	case "fail":
		fmt.Fprintf(os.Stderr, "broker upgrade-check: config: %s: unknown key \"frobnicate\"\n", args[2])
		return 1
	case "hang":
		time.Sleep(time.Hour) // the behaviour under test: a binary that never answers
	}
	fmt.Println("version 9.9.9")
	fmt.Println("build 0011223344556677")
	if _, _, err := CheckState(os.NewFile(3, "state")); err != nil {
		fmt.Fprintf(os.Stderr, "broker upgrade-check: state: %v\n", err)
		return 1
	}
	return 0
}

func TestPrecheck(t *testing.T) {
	dir := testutil.ShortDir(t)
	bin := filepath.Join(dir, "broker-new")
	testutil.CopyFile(t, os.Args[0], bin, 0o755)
	noExec := filepath.Join(dir, "broker-noexec")
	testutil.CopyFile(t, os.Args[0], noExec, 0o644)
	good, err := Encode(&statepb.State{Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	newer := bytes.Clone(good)
	binary.BigEndian.PutUint32(newer[8:], FormatVersion+1)

	for _, tc := range []struct {
		name, bin, behave string
		state             []byte
		want              string // error text; "" = accepted
	}{
		{"accepted", bin, "ok", good, ""},
		{"exits 1", bin, "fail", good, `refused the upgrade (exit status 1): broker upgrade-check: config: /etc/broker.toml: unknown key "frobnicate"`},
		{"different state format", bin, "ok", newer, "state format is newer than this broker understands"},
		{"not executable", noExec, "ok", good, "not executable (mode -rw-r--r--)"},
		{"missing", filepath.Join(dir, "nope"), "ok", good, "no such file or directory"},
		{"a directory", dir, "ok", good, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append(os.Environ(), envRole+"=newbin", envNewBin+"="+tc.behave, "GORACE=atexit_sleep_ms=0")
			got, err := Precheck(context.Background(), tc.bin, "/etc/broker.toml", tc.state, env)
			if tc.want == "" {
				if err != nil || got != (Prechecked{Version: "9.9.9", BuildID: "0011223344556677"}) {
					t.Fatalf("Precheck = %+v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Precheck = %+v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

func TestPrecheckTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the pre-check timeout")
	}
	good, err := Encode(&statepb.State{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	env := append(os.Environ(), envRole+"=newbin", envNewBin+"=hang")
	_, err = Precheck(ctx, os.Args[0], "/etc/broker.toml", good, env)
	if err == nil || !strings.Contains(err.Error(), "pre-check did not finish") {
		t.Fatalf("Precheck of a hanging binary: %v", err)
	}
}
