package serve

import (
	"sync"
	"time"
)

// LogLimiter lets one log line per key through per interval and counts the lines it
// held back, so a flood (accept errors under EMFILE, a peer sending garbage) costs one
// line per second per kind, with a count, instead of one per event.
type LogLimiter struct {
	every   time.Duration
	maxKeys int

	mu   sync.Mutex
	keys map[string]*logKey
}

type logKey struct {
	last       time.Time
	suppressed int
}

// overflowKey shares one budget among keys past maxKeys, so hostile input that varies a
// key cannot grow the map.
const overflowKey = "\x00other"

// NewLogLimiter returns a limiter allowing one line per key per every, tracking at most
// maxKeys distinct keys.
func NewLogLimiter(every time.Duration, maxKeys int) *LogLimiter {
	return &LogLimiter{every: every, maxKeys: maxKeys, keys: make(map[string]*logKey)}
}

// Allow reports whether a line for key may be written at now and, when it may, how many
// lines for key were held back since the last one written.
func (l *LogLimiter) Allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys[key]
	if k == nil {
		if len(l.keys) >= l.maxKeys {
			key = overflowKey
			k = l.keys[key]
		}
		if k == nil {
			l.keys[key] = &logKey{last: now}
			return true, 0
		}
	}
	if now.Sub(k.last) < l.every {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return true, n
}
