package servicedef

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// renameToVisible atomically replaces the definition and returns the time from calling
// rename(2) to Lookup returning the new definition. It spins (yielding) rather than ticking so the figure is
// the loader's latency, not the poll period.
func renameToVisible(tb testing.TB, l *Loader, dir string, i int) time.Duration {
	bin := fmt.Sprintf("/bin/v%d", i)
	b, err := Encode(defWith("zc", bin))
	if err != nil {
		tb.Fatal(err)
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%d", i))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if err := os.Rename(tmp, filepath.Join(dir, "zc"+Ext)); err != nil {
		tb.Fatal(err)
	}
	deadline := start.Add(5 * time.Second)
	for binOf(l, "zc") != bin {
		if time.Now().After(deadline) {
			tb.Fatalf("rename %d not visible after 5s", i)
		}
		runtime.Gosched()
	}
	return time.Since(start)
}

// BenchmarkRenameToVisible reports P50/P99 of the time from rename(2) returning to the
// new definition being visible in Lookup (v1 asks for "within milliseconds"):
//
//	go test -run '^$' -bench RenameToVisible -benchtime 300x ./servicedef
func BenchmarkRenameToVisible(b *testing.B) {
	dir := privateDir(b)
	l, _ := startLoader(b, dir)
	var ds []time.Duration
	for i := 0; b.Loop(); i++ {
		ds = append(ds, renameToVisible(b, l, dir, i))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkLookup measures the Hello-path read: one atomic load and a map lookup.
func BenchmarkLookup(b *testing.B) {
	l := NewLoader("/nonexistent", zerolog.Nop())
	l.snap.Store(&Snapshot{dir: "/d", entries: map[string]*entry{"zc": {def: defWith("zc", "/bin/zc")}}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if l.Lookup("zc").Def == nil {
				b.Fatal("missing")
			}
		}
	})
}
