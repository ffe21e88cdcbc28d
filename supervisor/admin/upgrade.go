package admin

import (
	"context"

	"github.com/rpbroker/broker/wire/wirepb"
)

// VerbUpgrade asks the broker to replace its binary in place (`broker upgrade`). Ours,
// outside the v1 verbs (1–9 and 21, with 10–20 reserved): a v1 broker answers it
// "unsupported admin verb". The new binary's path, when not the broker's own, travels in
// output_path, the request's one free-form path field.
const VerbUpgrade = wirepb.AdminVerb(100)

// Image is the running broker image in STATUS (ours): generation is 0 at first start and
// +1 per upgrade in place.
type Image struct {
	Generation uint64
	Version    string
	BuildID    string
	Upgrade    *UpgradeStatus
}

// UpgradeStatus is the last upgrade in STATUS (ours): the one that started this image,
// or one refused since.
type UpgradeStatus struct {
	AtUnixMS int64   `json:"at_unix_ms"`
	OK       bool    `json:"ok"`
	TookMS   float64 `json:"took_ms,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// upgrade answers VerbUpgrade: exit 0 once the new binary's pre-check passed (the switch
// is then under way and this connection ends with the old image), 1 with the reason.
func (h *Handler) upgrade(ctx context.Context, req *wirepb.AdminRequest) *wirepb.AdminReply {
	if h.Upgrade == nil {
		return text("unsupported admin verb\n", 2)
	}
	msg, err := h.Upgrade(ctx, req.GetOutputPath())
	if err != nil {
		return text(err.Error()+"\n", 1)
	}
	return text(msg, 0)
}
