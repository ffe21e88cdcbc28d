package registered_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/supervisor/handoff/handofftest"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestMain(m *testing.M) {
	handofftest.MaybeChild()
	maybeRawChild()
	goleak.VerifyTestMain(m)
}

// The test binary is also the backends. handofftest's modes give a real sdk/backend
// server; the modes below are raw endpoints that each break one rule of the identity
// probe (docs/protocol.md, "The identity probe (0xB232)").
const (
	envMode = "RPB_REGISTEREDTEST_MODE"
	envEP   = "RPB_REGISTEREDTEST_EP"
	envArg  = "RPB_REGISTEREDTEST_ARG"
)

// Child modes. Every child reports "conn <ns since start>" on stderr as it accepts a
// connection, before it does anything with it, and "listening" once it accepts.
const (
	// modeAnswer closes its first <arg> connections unanswered (a backend that bound its
	// socket but is not ready yet), then answers the probe truthfully.
	modeAnswer = "answer"
	// modeForge answers the probe, but with the field named by arg forged: pid, exe,
	// hash or endpoint.
	modeForge = "forge"
	// modeGarbage answers the probe with bytes that are not a frame.
	modeGarbage = "garbage"
	// modePlain accepts and closes: a listener that does not speak the probe.
	modePlain = "plain"
	// modeRelay forwards every connection to the endpoint <arg>: the endpoint is served
	// by one process while another one answers.
	modeRelay = "relay"
)

// maybeRawChild runs a raw backend and exits when the process was started as one.
func maybeRawChild() {
	mode := os.Getenv(envMode)
	if mode == "" {
		return
	}
	if err := runRawChild(mode, os.Getenv(envEP), os.Getenv(envArg)); err != nil {
		fmt.Fprintf(os.Stderr, "registered test child: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runRawChild serves until it is killed (SIGTERM's default action ends it).
func runRawChild(mode, ep, arg string) error {
	start := time.Now()
	os.Remove(ep) // a socket left by an earlier child of the same test
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ep, Net: "unix"})
	if err != nil {
		return err
	}
	if err := os.Chmod(ep, 0o600); err != nil {
		return err
	}
	var mu sync.Mutex
	report := func(s string) {
		mu.Lock()
		os.Stderr.WriteString(s + "\n")
		mu.Unlock()
	}
	report("listening")
	mute, _ := strconv.Atoi(arg)
	for n := 1; ; n++ {
		c, err := ln.AcceptUnix()
		if err != nil {
			return err
		}
		report("conn " + strconv.FormatInt(time.Since(start).Nanoseconds(), 10))
		switch mode {
		case modeAnswer:
			if n <= mute {
				c.Close()
				continue
			}
			go answer(c, ep, "")
		case modeForge:
			go answer(c, ep, arg)
		case modeGarbage:
			go func() {
				defer c.Close()
				// Read the probe first, so that the answer, not a closed socket, is what
				// the broker sees.
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := wire.ReadFrameBody(c, wire.MaxHelloBody); err == nil {
					c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				}
			}()
		case modePlain:
			c.Close()
		case modeRelay:
			go relay(c, arg)
		default:
			return fmt.Errorf("unknown mode %q", mode)
		}
	}
}

// answer answers one identity probe on c with this process's identity, the field named
// by forge replaced.
func answer(c *net.UnixConn, ep, forge string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	body, err := wire.ReadFrameBody(c, wire.MaxHelloBody)
	if err != nil {
		return
	}
	var f wirepb.Frame
	if err := proto.Unmarshal(body, &f); err != nil {
		return
	}
	self, err := identity.Self(ep)
	if err != nil {
		return
	}
	switch forge {
	case "pid": // our parent: the same executable, another process
		self.Pid = uint32(os.Getppid())
	case "exe":
		self.ExePath = "/usr/bin/some-other-daemon"
	case "hash":
		self.ExeHash[0] ^= 0xff
	case "endpoint":
		self.IpcEndpoint = &wirepb.Endpoint{Path: ep + ".elsewhere"}
	}
	identity.Answer(c, &f, self)
}

// relay copies c to a fresh connection to target and back.
func relay(c *net.UnixConn, target string) {
	defer c.Close()
	up, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		io.Copy(up, c)
		up.(*net.UnixConn).CloseWrite()
	}()
	io.Copy(c, up)
}
