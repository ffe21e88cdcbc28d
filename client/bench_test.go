package client_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/handoff"
	"github.com/rpbroker/broker/handoff/handofftest"
)

// BenchmarkHandoffVsReconnect measures, interleaved in one run, a full Hello + handoff +
// 1-byte round trip on the adopted socket (A) against a full Hello + reconnect to
// backend_pipe + the same round trip (B), at least 5,000 samples each, against a real
// serve loop in this process and a real backend process:
//
//	go test -run '^$' -bench HandoffVsReconnect -benchtime 1x ./client
//
// Sub-benchmark "ext" uses our extensions (the backend relays the EVENT, handoff
// connections are reused); "v1" is the plain v1 exchange against the same backend.
func BenchmarkHandoffVsReconnect(b *testing.B) {
	for _, v1 := range []bool{false, true} {
		name := "ext"
		if v1 {
			name = "v1"
		}
		b.Run(name, func(b *testing.B) { benchHandoff(b, v1) })
	}
}

func benchHandoff(b *testing.B, v1Only bool) {
	be := handofftest.Start(b, handofftest.Echo, handofftest.ShortDir(b), -1)
	br := startBroker(b, be, brokerOpts{handoff: true, ho: handoff.Options{V1Only: v1Only}})
	ctx := context.Background()
	var fellBack int
	sample := func(handoff bool) time.Duration {
		var opts []client.Option
		if handoff {
			opts = append(opts, client.WithHandoff())
		}
		var buf [1]byte
		start := time.Now()
		c, _, err := client.Connect(ctx, br.path, service, version, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		if handoff && connectedTo(c) != br.path {
			fellBack++
		}
		c.Close()
		return el
	}
	for i := range 500 { // warm up both paths (pools, caches, runtime)
		sample(i%2 == 0)
	}
	fellBack = 0

	n := max(b.N, 5000)
	ho := make([]time.Duration, 0, n)
	re := make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := range n {
		if i%2 == 0 { // alternate the order so neither path always runs first
			ho = append(ho, sample(true))
			re = append(re, sample(false))
		} else {
			re = append(re, sample(false))
			ho = append(ho, sample(true))
		}
	}
	b.StopTimer()

	hp50, hp99 := pct(ho, 50), pct(ho, 99)
	rp50, rp99 := pct(re, 50), pct(re, 99)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(hp50), "handoff-p50-µs")
	b.ReportMetric(us(hp99), "handoff-p99-µs")
	b.ReportMetric(us(rp50), "reconnect-p50-µs")
	b.ReportMetric(us(rp99), "reconnect-p99-µs")
	b.ReportMetric(us(hp50)/us(rp50), "p50-ratio")
	b.ReportMetric(us(hp99)/us(rp99), "p99-ratio")
	var t strings.Builder
	fmt.Fprintf(&t, "%d samples each, %d handoffs fell back\n", n, fellBack)
	fmt.Fprintf(&t, "%-28s %10s %10s\n", "path", "P50", "P99")
	fmt.Fprintf(&t, "%-28s %10v %10v\n", "A Hello+handoff+1B RTT", hp50, hp99)
	fmt.Fprintf(&t, "%-28s %10v %10v\n", "B Hello+reconnect+1B RTT", rp50, rp99)
	fmt.Fprintf(&t, "%-28s %10.3f %10.3f\n", "ratio A/B", us(hp50)/us(rp50), us(hp99)/us(rp99))
	b.Log("\n" + t.String())
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}
