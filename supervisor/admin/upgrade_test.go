package admin

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/wirepb"
)

// STATUS carries the running image; VerbUpgrade answers what the broker's Upgrade says,
// and is unsupported without one.
func TestUpgradeVerbAndImage(t *testing.T) {
	var asked string
	h := &Handler{Instance: "shared", Shared: serve.NewShared(nil, nil),
		Image: func() Image {
			return Image{Generation: 3, Version: "1.2.3", BuildID: "00112233aabbccdd",
				Upgrade: &UpgradeStatus{AtUnixMS: 5, OK: true, TookMS: 41.5}}
		},
		Upgrade: func(_ context.Context, binary string) (string, error) {
			asked = binary
			if binary == "/bad" {
				return "", errors.New("new binary /bad: not executable")
			}
			return "pre-check passed\n", nil
		},
	}
	r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
	var st StatusReply
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Generation != 3 || st.Version != "1.2.3" || st.BuildID != "00112233aabbccdd" || st.Upgrade == nil || st.Upgrade.TookMS != 41.5 {
		t.Fatalf("status image: %s", r.Body)
	}
	for _, tc := range []struct {
		binary, body string
		code         uint32
	}{
		{"", "pre-check passed\n", 0},
		{"/bad", "new binary /bad: not executable\n", 1},
	} {
		r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: VerbUpgrade, OutputPath: tc.binary})
		if r.Body != tc.body || r.ExitCode != tc.code || asked != tc.binary {
			t.Errorf("upgrade %q: %q exit %d (asked %q)", tc.binary, r.Body, r.ExitCode, asked)
		}
	}
	h.Upgrade = nil
	if r := h.Serve(context.Background(), &wirepb.AdminRequest{Verb: VerbUpgrade}); r.ExitCode != 2 {
		t.Fatalf("upgrade without an Upgrade func: %q exit %d", r.Body, r.ExitCode)
	}
}
