package serve

import (
	"runtime"
	"sync"
	"testing"
)

// After growStack, a goroutine holds a grown stack: n parked goroutines that called it
// add several KiB each to the stack memory in use, where fresh ones add their small
// start (2 KiB). The measure is rough (other stacks come and go), the gap is not.
func TestGrowStackGrowsOnce(t *testing.T) {
	const n = 512
	inUse := func(grow bool) uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.StackInuse
		var ready sync.WaitGroup
		release := make(chan struct{})
		ready.Add(n)
		for range n {
			go func() {
				if grow {
					growStack()
				}
				ready.Done()
				<-release
			}()
		}
		ready.Wait()
		runtime.ReadMemStats(&ms)
		after := ms.StackInuse
		close(release)
		return (after - before) / n
	}
	plain, grown := inUse(false), inUse(true)
	if grown < plain+4<<10 {
		t.Fatalf("a goroutine after growStack holds %d bytes of stack, a fresh one %d: want at least 4 KiB more", grown, plain)
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
