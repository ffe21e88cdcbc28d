package servicedef

import (
	"errors"
	"strings"
	"testing"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestCheckVersionPolicy(t *testing.T) {
	tests := []struct {
		name   string
		min    string
		allow  []string
		wanted string
		reason string // "" = allowed
	}{
		{"no policy", "", nil, "0.0.1", ""},
		{"at min", "1.2.3", nil, "1.2.3", ""},
		{"above min numerically", "1.2.3", nil, "1.10.0", ""},
		{"below min", "1.2.3", nil, "1.2.2", wire.ReasonBelowMin},
		{"prerelease ignored", "1.2.3", nil, "1.2.3-rc.1", ""},
		{"in allow list", "", []string{"1.0.0", "2.0.0"}, "2.0.0", ""},
		{"not in allow list", "", []string{"1.0.0"}, "1.0.1", wire.ReasonNotAllowed},
		{"allow list is exact", "", []string{"1.0.0"}, "1.0.0-rc.1", wire.ReasonNotAllowed},
		{"min checked first", "3.0.0", []string{"1.0.0"}, "2.0.0", wire.ReasonBelowMin},
		{"both pass", "1.0.0", []string{"1.5.0"}, "1.5.0", ""},
	}
	for _, tc := range tests {
		d := goodDef("zc")
		d.MinVersion, d.VersionAllowList = tc.min, tc.allow
		r := CheckVersionPolicy(d, tc.wanted)
		if tc.reason == "" {
			if r != nil {
				t.Errorf("%s: refused %v", tc.name, r)
			}
			continue
		}
		if r == nil || r.Code != wirepb.ErrorCode_ERROR_VERSION_BLOCKED || r.Reason != tc.reason || r.RetryMS != wire.RetryVersion {
			t.Errorf("%s: got %+v, want VERSION_BLOCKED %q retry %d", tc.name, r, tc.reason, wire.RetryVersion)
		}
	}
}

func TestLookupRefusal(t *testing.T) {
	if r := (Lookup{Def: goodDef("zc"), Found: true}).Refusal(); r != nil {
		t.Fatalf("usable def refused: %v", r)
	}
	r := Lookup{}.Refusal()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN || r.Reason != wire.ReasonServiceNotFound {
		t.Fatalf("missing: %+v", r)
	}
	r = Lookup{Err: errors.New("servicedef /d/zc.servicedef: binary_path is empty"), Found: true}.Refusal()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN ||
		!strings.HasPrefix(r.Reason, wire.ReasonServiceLoad) || !strings.HasSuffix(r.Reason, "binary_path is empty") {
		t.Fatalf("broken: %+v", r)
	}
}
