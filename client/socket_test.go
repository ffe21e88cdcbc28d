package client_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire/names"
)

func TestDefaultSocket(t *testing.T) {
	mid, err := names.MachineID()
	if err != nil {
		t.Skip("no machine id:", err)
	}
	sid := names.UserHash(os.Geteuid(), mid)
	run := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", run)
	dir := filepath.Join(run, "running-process", "broker")
	cases := []struct {
		service string
		shared  bool
		want    string
		err     string
	}{
		{"zccache", false, filepath.Join(dir, "rpb-v1-"+sid+"-svc-zccache.sock"), ""},
		{"zccache", true, filepath.Join(dir, "rpb-v1-"+sid+"-shared.sock"), ""},
		{"Bad", false, "", "invalid"},
	}
	for _, tc := range cases {
		got, err := client.DefaultSocket(tc.service, tc.shared)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %q, %v; want error %q", tc.service, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s shared=%v: %q, %v; want %q", tc.service, tc.shared, got, err, tc.want)
		}
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	got, err := client.DefaultSocket("zccache", false)
	want := filepath.Join(os.TempDir(), "running-process-"+strconv.Itoa(os.Geteuid()), "broker", "rpb-v1-"+sid+"-svc-zccache.sock")
	if err != nil || got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, %v; want %q", got, err, want)
	}
}
