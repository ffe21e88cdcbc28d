package supervisor

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/testutil"
)

// notifySocket binds a datagram socket as systemd's NOTIFY_SOCKET and returns the
// messages the broker sends to it, one per datagram, in order.
func notifySocket(t *testing.T, dir string) <-chan string {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return msgs
}

// nextNotify returns the next message that is not a watchdog ping.
func nextNotify(t *testing.T, msgs <-chan string) string {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-msgs:
			if m != "WATCHDOG=1" {
				return m
			}
		case <-deadline:
			t.Fatal("no sd_notify message within 15s")
			return ""
		}
	}
}

func expectNotify(t *testing.T, msgs <-chan string, pattern string) string {
	t.Helper()
	m := nextNotify(t, msgs)
	if !regexp.MustCompile(`^` + pattern + `$`).MatchString(m) {
		t.Fatalf("sd_notify message %q, want /%s/", m, pattern)
	}
	return m
}

// TestNotifyStartReloadStop: READY=1 once both sockets are bound and both backends were
// probed (one is down: it does not hold readiness back), RELOADING=1 with MONOTONIC_USEC
// then READY=1 around each reload, ok or rejected, and STOPPING=1 with a timeout extension
// covering the drain.
func TestNotifyStartReloadStop(t *testing.T) {
	e := newEnv(t)
	msgs := notifySocket(t, e.dir)
	be, _ := startBackend(t, e.dir)
	e.writeConfig(registeredService("up", "1.0.0", be, e.sock("up")) +
		registeredService("down", "1.0.0", filepath.Join(e.dir, "absent.sock"), e.sock("down")))
	r := e.start()

	expectNotify(t, msgs, `READY=1\nSTATUS=2/2 services serving, 1 backends live, no reload yet`)
	for _, s := range []string{"up", "down"} {
		if _, err := os.Stat(e.sock(s)); err != nil {
			t.Fatalf("READY=1 sent before %s was bound: %v", s, err)
		}
	}

	if res := r.sup.Reload(context.Background()); res.Err != nil {
		t.Fatal(res.Err)
	}
	expectNotify(t, msgs, `RELOADING=1\nMONOTONIC_USEC=[0-9]+`)
	expectNotify(t, msgs, `READY=1\nSTATUS=2/2 services serving, 1 backends live, last reload ok at [0-9:]+`)

	if err := os.WriteFile(e.cfgPath, []byte("[broker]\nnope = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := r.sup.Reload(context.Background()); res.Err == nil {
		t.Fatal("a bad file reloaded")
	}
	expectNotify(t, msgs, `RELOADING=1\nMONOTONIC_USEC=[0-9]+`)
	expectNotify(t, msgs, `READY=1\nSTATUS=2/2 services serving, 1 backends live, last reload failed at [0-9:]+: .*nope.*`)

	r.shutdown(t)
	// shutdown_grace 5s + the children's 5s + 5s of slack.
	expectNotify(t, msgs, `STOPPING=1\nSTATUS=stopping \(signal\)\nEXTEND_TIMEOUT_USEC=15000000`)
}

// TestNotifyReadyWaitsForFirstProbe: a backend endpoint that accepts and never answers
// holds READY=1 back until its probe has timed out (500 ms), not longer.
func TestNotifyReadyWaitsForFirstProbe(t *testing.T) {
	e := newEnv(t)
	msgs := notifySocket(t, e.dir)
	silent := filepath.Join(e.dir, "silent-backend.sock")
	ln, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- time.Now()
		defer c.Close()
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	e.writeConfig(registeredService("silent", "1.0.0", silent, e.sock("silent")))
	e.start()

	expectNotify(t, msgs, `READY=1\nSTATUS=1/1 services serving, 0 backends live, no reload yet`)
	readyAt := time.Now()
	var at time.Time
	select {
	case at = <-accepted:
	default:
		t.Fatal("READY=1 before the first probe connected")
	}
	if waited := readyAt.Sub(at); waited < 300*time.Millisecond {
		t.Fatalf("READY=1 %v after the probe connected: it did not wait for the probe's answer", waited)
	}
}

// TestNotifyWatchdog: WATCHDOG=1 comes from the event loop at half of WATCHDOG_USEC and
// stops while the loop is wedged (here: held inside a reload), so systemd would restart a
// wedged broker.
func TestNotifyWatchdog(t *testing.T) {
	e := newEnv(t)
	msgs := notifySocket(t, e.dir)
	const interval = 200 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	e.writeConfig(registeredService("svc", "1.0.0", filepath.Join(e.dir, "absent.sock"), e.sock("svc")))
	hold, held := make(chan struct{}), make(chan struct{})
	sup, err := New(Options{
		Load: func() (*config.Config, error) { return config.Load(e.cfgPath, config.LoadOptions{Environ: []string{}}) },
		Log:  testLogger(t),
		OnBrokerChange: func(_, _ config.Broker) {
			close(held)
			<-hold
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// Pings arrive about every interval/2.
	pings, start := 0, time.Now()
	for pings < 4 {
		select {
		case m := <-msgs:
			if m == "WATCHDOG=1" {
				pings++
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no WATCHDOG=1")
		}
	}
	if took := time.Since(start); took > 4*interval {
		t.Fatalf("4 pings took %v, want about %v", took, 2*interval)
	}

	// Wedge the event loop inside a reload: no ping for three whole intervals.
	e.writeConfigWith(`hello_timeout = "7s"`, registeredService("svc", "1.0.0", filepath.Join(e.dir, "absent.sock"), e.sock("svc")))
	reloaded := make(chan ReloadResult, 1)
	go func() { reloaded <- sup.Reload(context.Background()) }()
	<-held
	// A live loop would ping 6 times in 3 intervals; allow the one sent just before it
	// was held and still on its way through the reader.
	quiet, late := time.After(3*interval), 0
	for wedged := true; wedged; {
		select {
		case m := <-msgs:
			if m == "WATCHDOG=1" {
				if late++; late > 1 {
					t.Fatal("WATCHDOG=1 while the event loop is wedged")
				}
			}
		case <-quiet:
			wedged = false
		}
	}
	close(hold)
	if res := <-reloaded; res.Err != nil {
		t.Fatal(res.Err)
	}
	testutil.WaitFor(t, "pings to resume", func() bool {
		for {
			select {
			case m := <-msgs:
				if m == "WATCHDOG=1" {
					return true
				}
			default:
				return false
			}
		}
	})
}

// TestNotifyOff: without NOTIFY_SOCKET the notifier hands the event loop nil channels,
// so its cases never fire, and sends nothing.
func TestNotifyOff(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	n := newNotifier(zerolog.Nop())
	if n.on || n.startupC() != nil || n.recheckC() != nil || n.statusC() != nil || n.watchdogC() != nil {
		t.Fatalf("notifier on without NOTIFY_SOCKET: %+v", n)
	}
	n.send("READY=1")
	n.close()
}

// TestChildEnvironWithoutNotify: launched backends do not get the variables systemd
// meant for the broker.
func TestChildEnvironWithoutNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/user/1000/systemd/notify")
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "42")
	t.Setenv("BROKER_KEEP", "NOTIFY_SOCKET=x")
	env := childEnviron()
	kept := false
	for _, kv := range env {
		for _, gone := range []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="} {
			if strings.HasPrefix(kv, gone) {
				t.Errorf("launched backends would get %s", kv)
			}
		}
		kept = kept || kv == "BROKER_KEEP=NOTIFY_SOCKET=x"
	}
	if !kept {
		t.Error("an unrelated variable was dropped")
	}
}
