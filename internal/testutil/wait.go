package testutil

import (
	"errors"
	"testing"
	"time"
)

const (
	pollEvery  = 2 * time.Millisecond
	waitForMax = 15 * time.Second
)

var errNotYet = errors.New("condition false")

// WaitFor polls cond until it holds; after 15 s it fails the test naming what it waited for.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	err := poll(waitForMax, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// WaitForErr polls cond until it returns nil; after limit it fails the test with the
// last error, which says more than "timed out".
func WaitForErr(t testing.TB, limit time.Duration, cond func() error) {
	t.Helper()
	if err := poll(limit, cond); err != nil {
		t.Fatalf("condition not met within %v: %v", limit, err)
	}
}

// poll returns nil once cond does, or cond's last error once limit has passed.
func poll(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}
