package handoff

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/rpbroker/broker/wire"
)

// maxOutstanding bounds the tokens waiting for their handoff. Past it no token is issued
// (the client simply reconnects through backend_pipe), so a flood of Hellos whose replies
// never reach AfterReply cannot grow the table without bound.
const maxOutstanding = 1 << 16

// tokens are one-time and expire: a token is valid for one handoff, within ttl of issue.
type tokens struct {
	ttl time.Duration

	mu  sync.Mutex
	out map[[wire.HandoffTokenLen]byte]time.Time // token -> expiry
}

func newTokens(ttl time.Duration) *tokens {
	return &tokens{ttl: ttl, out: make(map[[wire.HandoffTokenLen]byte]time.Time)}
}

// issue returns a fresh token, or nil when too many are outstanding.
func (t *tokens) issue(now time.Time) []byte {
	var k [wire.HandoffTokenLen]byte
	rand.Read(k[:]) // never fails on Linux (getrandom)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.out) >= maxOutstanding {
		t.sweepLocked(now)
		if len(t.out) >= maxOutstanding {
			return nil
		}
	}
	t.out[k] = now.Add(t.ttl)
	return k[:]
}

// consume reports whether tok was issued, not yet used and not expired; it can succeed
// only once per token.
func (t *tokens) consume(tok []byte, now time.Time) bool {
	if len(tok) != wire.HandoffTokenLen {
		return false
	}
	k := [wire.HandoffTokenLen]byte(tok)
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, ok := t.out[k]
	if !ok {
		return false
	}
	delete(t.out, k)
	return now.Before(exp)
}

// sweep drops expired tokens (their Hello never reached the handoff).
func (t *tokens) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
}

func (t *tokens) sweepLocked(now time.Time) {
	for k, exp := range t.out {
		if !now.Before(exp) {
			delete(t.out, k)
		}
	}
}

func (t *tokens) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.out)
}
