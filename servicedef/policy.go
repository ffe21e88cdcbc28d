package servicedef

import (
	"slices"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// CheckVersionPolicy applies the v1 version policy to a valid wanted
// version: min_version first (numeric MAJOR.MINOR.PATCH, pre-release ignored), then an exact
// match in version_allow_list. It returns nil when the version may be served.
func CheckVersionPolicy(def *wirepb.ServiceDefinition, wanted string) *wire.Refusal {
	if min := def.GetMinVersion(); min != "" && names.CompareVersions(wanted, min) < 0 {
		r := wire.Refuse(wirepb.ErrorCode_ERROR_VERSION_BLOCKED, wire.ReasonBelowMin, wire.RetryVersion)
		return &r
	}
	if allow := def.GetVersionAllowList(); len(allow) > 0 && !slices.Contains(allow, wanted) {
		r := wire.Refuse(wirepb.ErrorCode_ERROR_VERSION_BLOCKED, wire.ReasonNotAllowed, wire.RetryVersion)
		return &r
	}
	return nil
}

// Refusal is the v1 SERVICE_UNKNOWN refusal of the Hello handshake for a lookup without a
// usable definition, or nil when l.Def may be used.
func (l Lookup) Refusal() *wire.Refusal {
	var r wire.Refusal
	switch {
	case l.Def != nil:
		return nil
	case l.Err != nil:
		r = wire.Refuse(wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN, wire.ReasonServiceLoad+l.Err.Error(), 0)
	default:
		r = wire.Refuse(wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN, wire.ReasonServiceNotFound, 0)
	}
	return &r
}
