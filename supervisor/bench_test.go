package supervisor

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// BenchmarkHelloVsFloor measures, in one run and interleaved, a full Hello round trip
// (connect + Hello + Negotiated + close) against a registered service of a running
// supervisor with a real backend process, and the floor: connect + 64-byte echo + close
// on a bare Unix socket served by a Go accept loop in the same process. Sequential and
// with 16 concurrent clients. b.N is the number of samples of each kind.
//
//	go test -run '^$' -bench HelloVsFloor -benchtime 20000x ./supervisor
func BenchmarkHelloVsFloor(b *testing.B) {
	e := newEnv(b)
	be, _ := startBackend(b, e.dir)
	e.writeConfig(registeredService("bench", "1.0.0", be, e.sock("bench")))
	e.start()
	testutil.WaitFor(b, "bench to negotiate", negotiates(e.sock("bench"), "bench", "1.0.0"))
	floor := startFloor(b, filepath.Join(e.dir, "floor.sock"))
	f, err := client.NewHelloFrame(&wirepb.Hello{ClientMinProtocol: 1, ClientMaxProtocol: 1, ServiceName: "bench", WantedVersion: "1.0.0"})
	if err != nil {
		b.Fatal(err)
	}
	hello, _ := wire.EncodeFrame(f)

	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", conc), func(b *testing.B) {
			perClient := max(b.N/conc, 1)
			var mu sync.Mutex
			var hellos, floors []time.Duration
			var wg sync.WaitGroup
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h, fl := make([]time.Duration, 0, perClient), make([]time.Duration, 0, perClient)
					for range perClient {
						d, err := timeFloor(floor)
						if err != nil {
							b.Error(err)
							return
						}
						fl = append(fl, d)
						if d, err = timeHello(e.sock("bench"), hello); err != nil {
							b.Error(err)
							return
						}
						h = append(h, d)
					}
					mu.Lock()
					hellos, floors = append(hellos, h...), append(floors, fl...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			hp50, hp99, fp50, fp99 := pct(hellos, 50), pct(hellos, 99), pct(floors, 50), pct(floors, 99)
			// Hellos per second with the clients' time in floor round trips taken out.
			busy := sum(hellos) + sum(floors)
			hps := float64(len(hellos)) / (elapsed.Seconds() * float64(sum(hellos)) / float64(busy))
			b.ReportMetric(float64(hp50.Microseconds()), "hello-p50-µs")
			b.ReportMetric(float64(hp99.Microseconds()), "hello-p99-µs")
			b.ReportMetric(float64(fp50.Microseconds()), "floor-p50-µs")
			b.ReportMetric(float64(fp99.Microseconds()), "floor-p99-µs")
			b.ReportMetric(float64(hp50)/float64(fp50), "p50-ratio")
			b.ReportMetric(float64(hp99)/float64(fp99), "p99-ratio")
			b.ReportMetric(hps, "hellos/s")
		})
	}
}

func startFloor(b *testing.B, path string) string {
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var buf [64]byte
				if _, err := io.ReadFull(c, buf[:]); err == nil {
					c.Write(buf[:])
				}
			}()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return path
}

func timeFloor(path string) (time.Duration, error) {
	var msg, buf [64]byte
	start := time.Now()
	c, err := net.Dial("unix", path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.Write(msg[:]); err != nil {
		return 0, err
	}
	_, err = io.ReadFull(c, buf[:])
	return time.Since(start), err
}

// timeHello sends prebuilt Hello bytes so the figure is the broker's, not client encoding.
func timeHello(socket string, hello []byte) (time.Duration, error) {
	start := time.Now()
	c, err := net.Dial("unix", socket)
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return 0, err
	}
	reply, err := wire.ReadFrame(c, wire.MaxFrameBody)
	c.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if _, err := client.DecodeHelloReply(reply); err != nil {
		return 0, err
	}
	return d, nil
}

func sum(ds []time.Duration) (t time.Duration) {
	for _, d := range ds {
		t += d
	}
	return t
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
