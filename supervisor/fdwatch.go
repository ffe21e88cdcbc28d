package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Demote before the wall: at 95% of RLIMIT_NOFILE Hellos get FD_PRESSURE; release below
// 90% so the state does not flap around one threshold.
const (
	fdDemoteAt  = 0.95
	fdReleaseAt = 0.90
)

func fdHigh(ratio float64, demoted bool) bool {
	if demoted {
		return ratio >= fdReleaseAt
	}
	return ratio >= fdDemoteAt
}

// watchFDs samples fd usage until ctx ends.
func (s *Supervisor) watchFDs(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	demoted := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ratio, err := FDUsage()
		if err != nil {
			continue
		}
		if high := fdHigh(ratio, demoted); high != demoted {
			demoted = high
			s.shared.FD.SetHighUsage(high)
			ev := s.log.Warn()
			if !high {
				ev = s.log.Info()
			}
			s.emit(events.Event{Kind: wirepb.EventKind_RESOURCE_PRESSURE,
				Reason: fmt.Sprintf("fd usage %.2f of RLIMIT_NOFILE; demoted=%t", ratio, high)})
			ev.Float64("fd_usage_ratio", ratio).Bool("demoted", high).Str("event", "resource_pressure").
				Msg("file descriptor pressure changed")
		}
	}
}
