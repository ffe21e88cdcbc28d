package serve

import (
	"testing"
	"unsafe"
)

// After growStack, the connection paths run without the runtime growing (and so moving)
// the stack: a local's address, taken after growStack, is the same after a 4 KiB deep
// walk. A fresh goroutine's stack is copied on that walk, and the address moves.
func TestGrowStackGrowsOnce(t *testing.T) {
	moved := func(grow bool) bool {
		out := make(chan bool)
		go func() {
			if grow {
				growStack()
			}
			var here byte
			before := uintptr(unsafe.Pointer(&here))
			deep(16)
			out <- uintptr(unsafe.Pointer(&here)) != before
		}()
		return <-out
	}
	if !moved(false) {
		t.Fatal("a fresh goroutine's stack did not move on a 4 KiB walk: the test no longer measures growth")
	}
	for range 100 {
		if moved(true) {
			t.Fatal("the stack moved on a 4 KiB walk after growStack")
		}
	}
}

// BenchmarkFreshGoroutine compares a new goroutine walking 6 KiB deep with and without
// growStack first: without, the runtime copies the stack twice, the second time with
// about 20 frames on it.
//
//	go test -run '^$' -bench FreshGoroutine ./supervisor/serve
func BenchmarkFreshGoroutine(b *testing.B) {
	for _, grow := range []bool{false, true} {
		b.Run(map[bool]string{false: "grow-on-demand", true: "growStack-first"}[grow], func(b *testing.B) {
			done := make(chan int)
			for b.Loop() {
				go func() {
					if grow {
						growStack()
					}
					done <- deep(24)
				}()
				<-done
			}
		})
	}
}

// deep recurses n frames of about 256 bytes each, as a decode-route-handoff path does.
//
//go:noinline
func deep(n int) int {
	var pad [200]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[(n+1)%len(pad)])
}
