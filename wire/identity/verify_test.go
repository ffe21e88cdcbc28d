package identity_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestVerify(t *testing.T) {
	base := &wirepb.DaemonProcess{
		Pid: 42, ExePath: "/opt/be", ExeHash: make([]byte, 32), BootId: "b",
		IpcEndpoint: &wirepb.Endpoint{Path: "/run/be.sock"}, ExeHashAlgorithm: "blake3",
		StartedAtUnixMs: 1,
	}
	cases := []struct {
		name   string
		mutate func(p *wirepb.DaemonProcess)
		field  string
	}{
		{"equal", func(*wirepb.DaemonProcess) {}, ""},
		{"started_at is not compared", func(p *wirepb.DaemonProcess) { p.StartedAtUnixMs = 2 }, ""},
		{"namespace is not compared", func(p *wirepb.DaemonProcess) { p.IpcEndpoint.NamespaceId = "ns" }, ""},
		{"pid", func(p *wirepb.DaemonProcess) { p.Pid = 43 }, "pid"},
		{"exe_path", func(p *wirepb.DaemonProcess) { p.ExePath = "/opt/other" }, "exe_path"},
		{"exe_hash", func(p *wirepb.DaemonProcess) { p.ExeHash = p.ExeHash[:31] }, "exe_hash"},
		{"boot_id", func(p *wirepb.DaemonProcess) { p.BootId = "c" }, "boot_id"},
		{"ipc_endpoint", func(p *wirepb.DaemonProcess) { p.IpcEndpoint = nil }, "ipc_endpoint"},
		{"order: path before boot", func(p *wirepb.DaemonProcess) { p.BootId = "c"; p.ExePath = "/x" }, "exe_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := proto.Clone(base).(*wirepb.DaemonProcess)
			tc.mutate(got)
			err := identity.Verify(got, base)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *identity.MismatchError
			if !errors.As(err, &me) || me.Field != tc.field {
				t.Fatalf("error %v, want field %s", err, tc.field)
			}
			if want := "endpoint probe response identity did not match expected daemon identity: " + tc.field; err.Error() != want {
				t.Fatalf("text %q", err)
			}
		})
	}
	if err := identity.Verify(nil, base); !errors.Is(err, identity.ErrMismatch) {
		t.Fatalf("nil: %v", err)
	}
}
