package identity_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// BenchmarkProbeAndVerify measures one full probe (connect, exchange, expected identity
// from /proc with a warm hash cache, compare) against an in-process backend, with
// P50/P99 reported alongside the mean.
func BenchmarkProbeAndVerify(b *testing.B) {
	ep := filepath.Join(b.TempDir(), "be.sock")
	if len(ep) > 100 {
		d, _ := os.MkdirTemp("/tmp", "rpb")
		defer os.RemoveAll(d)
		ep = filepath.Join(d, "be.sock")
	}
	var h identity.Hasher
	self, err := h.Self(ep)
	if err != nil {
		b.Fatal(err)
	}
	fakeBackendAt(b, ep, func(conn net.Conn, req *wirepb.Frame) { _ = identity.Answer(conn, req, self) })
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := identity.ProbeAndVerify(ctx, ep, &h, 0); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkHashFile measures cold BLAKE3 throughput on a 64 MiB file (no cache).
func BenchmarkHashFile(b *testing.B) {
	p := filepath.Join(b.TempDir(), "blob")
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := identity.HashFile(p); err != nil {
			b.Fatal(err)
		}
	}
}
