package backend_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire/identity"
)

// BenchmarkConnectEcho compares a connect + 64-byte echo through the SDK with the same
// exchange on a bare listener (the floor), and a full identity probe through the SDK.
func BenchmarkConnectEcho(b *testing.B) {
	dir, err := os.MkdirTemp("/tmp", "rpb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	sdkEP := filepath.Join(dir, "sdk.sock")
	srv, err := backend.New(backend.Options{Endpoint: sdkEP})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	wg.Go(func() { _ = srv.Serve(ctx, echo) })

	bareEP := filepath.Join(dir, "bare.sock")
	ln, err := net.Listen("unix", bareEP)
	if err != nil {
		b.Fatal(err)
	}
	context.AfterFunc(ctx, func() { ln.Close() }) // fires on the deferred cancel
	wg.Go(func() {
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { defer c.Close(); echo(ctx, c) })
		}
	})

	msg := make([]byte, 64)
	exchange := func(ep string) error {
		c, err := net.Dial("unix", ep)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_, err = io.ReadFull(c, make([]byte, len(msg)))
		return err
	}
	var h identity.Hasher
	run := func(b *testing.B, op func() error) {
		var lat []time.Duration
		for b.Loop() {
			start := time.Now()
			if err := op(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("bare", func(b *testing.B) { run(b, func() error { return exchange(bareEP) }) })
	b.Run("sdk", func(b *testing.B) { run(b, func() error { return exchange(sdkEP) }) })
	b.Run("sdk-probe", func(b *testing.B) {
		run(b, func() error { _, err := identity.ProbeAndVerify(ctx, sdkEP, &h, 0); return err })
	})
}
