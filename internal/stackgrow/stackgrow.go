// Package stackgrow grows a new goroutine's stack while it is still shallow.
//
// Goroutines start with a small stack (2 KiB, or the runtime's running average) and the
// runtime doubles it when a call needs more, copying the stack and adjusting every frame
// on it: the deeper the stack at that moment, the costlier. A goroutine per connection
// that walks a deep path (decode, route, hand off) pays for one or two such copies
// halfway down, on every connection. Growing once at the top, where the copy is a
// couple of frames, is cheaper. (CockroachDB's util/growstack does the same.)
package stackgrow

// frame is the size of Grow's frame: with the caller's own frames, the runtime doubles
// the stack to 8 KiB in one copy, enough for the broker's Hello and handoff paths.
const frame = 5 << 10

// Grow makes the calling goroutine's stack at least 8 KiB, in one copy.
//
//go:noinline
func Grow() { grow(0) }

// grow has a large frame that the compiler cannot elide: the index is not constant.
//
//go:noinline
func grow(i int) byte {
	var b [frame]byte
	b[i] = 1
	return b[(i*7+1)%frame]
}
