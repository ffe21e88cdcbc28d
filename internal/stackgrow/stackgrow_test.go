package stackgrow

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// BenchmarkFreshGoroutine compares a new goroutine walking 6 KiB deep with and without
// Grow first: without, the runtime copies the stack twice, the second time with ~20
// frames on it.
//
//	go test -bench FreshGoroutine ./internal/stackgrow
func BenchmarkFreshGoroutine(b *testing.B) {
	for _, grow := range []bool{false, true} {
		name := map[bool]string{false: "grow-on-demand", true: "Grow-first"}[grow]
		b.Run(name, func(b *testing.B) {
			done := make(chan int)
			for b.Loop() {
				go func() {
					if grow {
						Grow()
					}
					done <- deep(24)
				}()
				<-done
			}
		})
	}
}

// Grow leaves the goroutine working: deep recursion after it returns the same result.
func TestGrow(t *testing.T) {
	want := deep(24)
	got := make(chan int)
	go func() {
		Grow()
		got <- deep(24)
	}()
	if g := <-got; g != want {
		t.Fatalf("deep after Grow = %d, want %d", g, want)
	}
}
