package client_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/supervisor/handoff"
	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
)

// The broker (this process) must not leak a descriptor on any handoff path: 1,000
// handoffs, accepted, declined by the backend and timed out for lack of an ack.
func TestHandoffFDsStable(t *testing.T) {
	dir := testutil.ShortDir(t)
	bes := []*handofftest.Backend{
		handofftest.Spawn(t, handofftest.Echo, dir, -1),
		handofftest.Spawn(t, handofftest.Reject, dir, -1),
		handofftest.Spawn(t, handofftest.NoAck, dir, -1),
	}
	var brokers []*broker
	for _, be := range bes {
		be.Ready(t)
		brokers = append(brokers, startBroker(t, be, brokerOpts{handoff: true, ho: handoff.Options{AckTimeout: 30 * time.Millisecond}}))
	}
	// Quiescent means: every pool full, no handoff or connection in flight.
	settle := func() int {
		for _, b := range brokers {
			d := b.rb.Dispatcher()
			testutil.WaitFor(t, "pool refilled", func() bool { return d.Stats().Spares == handoff.DefaultSpares })
		}
		return handofftest.OpenFDs(t)
	}
	// Warm up: the runtime opens a few descriptors of its own on first use.
	tokens := connectMany(t, brokers, 30)
	before := settle()

	const total = 1000
	tokens += connectMany(t, brokers, total)

	deadline := time.Now().Add(10 * time.Second)
	after := settle()
	for after != before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		after = settle()
	}
	var handed, failed uint64
	for _, b := range brokers {
		st := b.rb.Dispatcher().Stats()
		handed += st.Handoffs
		failed += st.Failures
		if st.Tokens != 0 {
			t.Errorf("%d tokens left outstanding", st.Tokens)
		}
	}
	t.Logf("open fds %d before, %d after; %d handoffs, %d failures", before, after, handed, failed)
	if after != before {
		t.Fatalf("open fds %d before, %d after %d handoffs", before, after, total)
	}
	// Early-data clients get no token from a broker whose backend has not proven it
	// relays (the silent one; the rejecting one answers the probe, then declines each
	// handoff): every token issued is one handoff or one failure.
	if handed+failed != uint64(tokens) || failed < 50 {
		t.Fatalf("%d handoffs, %d failures, %d tokens issued", handed, failed, tokens)
	}
}

// connectMany runs n handoff Connects spread over the brokers (mostly the accepting
// one; every 20th to the one that never acks), four at a time; every other one sends its
// message as early data. It returns how many Negotiateds carried a token.
func connectMany(t *testing.T, brokers []*broker, n int) int {
	t.Helper()
	var tokens atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan int)
	errs := make(chan error, n)
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				b := brokers[0]
				switch {
				case i%20 == 19:
					b = brokers[2]
				case i%5 == 4:
					b = brokers[1]
				}
				msg := fmt.Sprint(i)
				opts := []client.Option{client.WithHandoff()}
				if i%2 == 1 { // half of them send early data
					opts = append(opts, client.WithEarlyData([]byte(msg)))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, neg, err := client.Connect(ctx, b.path, service, version, opts...)
				cancel()
				if err != nil {
					errs <- err
					continue
				}
				if len(neg.HandlePassedToken) > 0 {
					tokens.Add(1)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, len(msg))
				if i%2 == 0 { // not sent yet
					_, err = c.Write([]byte(msg))
				}
				if err != nil {
					errs <- err
				} else if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
					errs <- fmt.Errorf("echo %q, %v", buf, err)
				}
				c.Close()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return int(tokens.Load())
}
