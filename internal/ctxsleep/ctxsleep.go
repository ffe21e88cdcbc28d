// Package ctxsleep waits for a duration unless a context ends first: the backoff step of
// every retry loop in the broker.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep waits d; it returns false, early, when ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
