package serve

import (
	"sync"
	"time"
)

// RateLimiter admits at most Limit Hellos per peer pid per fixed window. One limiter is
// shared by every loop of a broker, so a client cannot dodge it by switching sockets.
// Pid 0 (unknown peer) is exempt, as in v1.
type RateLimiter struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	windows map[int32]*pidWindow
	swept   time.Time
}

type pidWindow struct {
	start time.Time
	count int
}

// NewRateLimiter returns a limiter; limit 0 disables it. now may be nil (time.Now).
func NewRateLimiter(limit int, window time.Duration, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{limit: limit, window: window, now: now, windows: make(map[int32]*pidWindow)}
}

// Allow records one Hello from pid. When over the limit it returns false and the time
// left in the window (at least 1 ms).
func (r *RateLimiter) Allow(pid int32) (bool, time.Duration) {
	if r == nil || r.limit <= 0 || pid == 0 {
		return true, 0
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	w := r.windows[pid]
	if w == nil || now.Sub(w.start) >= r.window {
		w = &pidWindow{start: now}
		r.windows[pid] = w
	}
	if w.count >= r.limit {
		return false, max(w.start.Add(r.window).Sub(now), time.Millisecond)
	}
	w.count++
	return true, 0
}

// sweepLocked drops expired windows at most once per window so the map stays bounded by
// the number of pids seen recently.
func (r *RateLimiter) sweepLocked(now time.Time) {
	if now.Sub(r.swept) < r.window {
		return
	}
	r.swept = now
	for pid, w := range r.windows {
		if now.Sub(w.start) >= r.window {
			delete(r.windows, pid)
		}
	}
}
