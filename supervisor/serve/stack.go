package serve

// growStack makes the calling goroutine's stack at least 8 KiB in one copy, while it is
// still shallow. A connection goroutine starts small and walks a deep path (decode,
// route, hand off); the runtime doubles its stack halfway down, copying every frame on
// it, once or twice per connection. Growing once at the top costs a two-frame copy. It
// was measured to keep the handoff's P99 below the reconnect's (docs/architecture.md,
// "A Hello's path"): without it, Hello + handoff + 1 byte P99/reconnect rose from about
// 0.91 to 0.93–1.01 in side-by-side runs.
//
//go:noinline
func growStack() { growFrame(0) }

// stackFrame, with the caller's frames, makes the runtime double to 8 KiB in one copy.
const stackFrame = 5 << 10

// growFrame has a large frame the compiler cannot elide: the index is not constant.
//
//go:noinline
func growFrame(i int) byte {
	var b [stackFrame]byte
	b[i] = 1
	return b[(i*7+1)%stackFrame]
}
