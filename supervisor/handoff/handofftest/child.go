package handofftest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Child modes.
const (
	Echo   = "echo"   // sdk backend with handoff, echoing every connection
	Reject = "reject" // same, but declines every handoff
	// Alternate accepts the first handoff and declines every second one after it, so a
	// broker sees the backend relay (and grants early data) before a decline.
	Alternate = "alternate"
	NoAck     = "noack" // sdk backend without handoff; a raw handoff listener that never acks
	Peek      = "peek"  // only a raw handoff listener that reports anything it receives
	// V1 is an sdk backend without handoff plus a raw handoff listener that follows v1
	// to the letter and knows no extension: it declines a token without a descriptor
	// (reporting "nofd") and hangs up, and serves one handoff per connection with an
	// echo. It is the v1-style backend that declines our extensions.
	V1 = "v1"
)

const (
	envMode    = "RPB_HANDOFFTEST_MODE"
	envEP      = "RPB_HANDOFFTEST_EP"
	envHandoff = "RPB_HANDOFFTEST_HANDOFF"
)

// MaybeChild runs the backend and exits when the process was started as one.
func MaybeChild() {
	mode := os.Getenv(envMode)
	if mode == "" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := runChild(ctx, mode, os.Getenv(envEP), os.Getenv(envHandoff)); err != nil {
		fmt.Fprintf(os.Stderr, "handofftest child: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild(ctx context.Context, mode, ep, hep string) error {
	o := backend.Options{Endpoint: ep, HandoffEndpoint: hep, PeekTimeout: 50 * time.Millisecond}
	switch mode {
	case Echo:
	case Reject:
		o.AcceptHandoff = func([]byte) bool { return false }
	case Alternate:
		var n atomic.Int64
		o.AcceptHandoff = func([]byte) bool { return n.Add(1)%2 == 1 }
	case NoAck, Peek, V1:
		o.HandoffEndpoint = ""
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: hep, Net: "unix"})
		if err != nil {
			return err
		}
		os.Chmod(hep, 0o600)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer ln.Close()
		context.AfterFunc(ctx, func() { ln.Close() })
		if mode == V1 {
			wg.Go(func() { v1Loop(ctx, ln) })
		} else {
			wg.Go(func() { holdLoop(ln) })
		}
		if mode == Peek {
			<-ctx.Done()
			return nil
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	srv, err := backend.New(o)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, Echoer)
}

// holdLoop accepts handoff connections, reports every descriptor or byte received on
// stderr ("fd" / "data" lines), never answers, and closes what it got once the broker
// hangs up.
func holdLoop(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var held []int
			defer func() {
				for _, fd := range held {
					unix.Close(fd)
				}
			}()
			buf := make([]byte, 4096)
			oob := make([]byte, unix.CmsgSpace(16))
			for {
				n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
				if oobn > 0 {
					msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
					for _, m := range msgs {
						fds, _ := unix.ParseUnixRights(&m)
						for range fds {
							os.Stderr.WriteString("fd\n")
						}
						held = append(held, fds...)
					}
				}
				if n > 0 {
					os.Stderr.WriteString("data\n")
				}
				if err != nil || n == 0 {
					return
				}
			}
		}()
	}
}

// v1Loop serves handoff connections as a strict v1 backend (one exchange each).
func v1Loop(ctx context.Context, ln *net.UnixListener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		wg.Go(func() {
			client := v1Exchange(c)
			c.Close()
			if client != nil {
				defer client.Close()
				Echoer(ctx, client)
			}
		})
	}
}

// v1Exchange receives one token (+ fd) and offer on c and acks it; it returns the
// adopted client, nil when it declined.
func v1Exchange(c *net.UnixConn) net.Conn {
	tok := make([]byte, wire.HandoffTokenLen)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(tok, oob)
	if err != nil || n != len(tok) {
		return nil
	}
	fd := -1
	if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) > 0 {
		if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) > 0 {
			fd = fds[0]
		}
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	body, err := wire.ReadFrameBody(c, wire.MaxHelloBody)
	var offer wire.HandoffOffer
	if err == nil {
		offer, err = wire.ParseHandoffOffer(body)
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil
	}
	ack := &wirepb.HandoffAck{Token: offer.Token, CorrelationId: offer.CorrelationID}
	var client net.Conn
	if fd < 0 {
		os.Stderr.WriteString("nofd\n")
		ack.ErrorDetail = "no descriptor"
	} else {
		file := os.NewFile(uintptr(fd), "client")
		client, err = net.FileConn(file)
		file.Close()
		ack.Accepted = err == nil
	}
	if b, err := wire.HandoffAckFrame(wirepb.FrameKind_RESPONSE, offer.RequestID, ack); err == nil {
		c.Write(b)
	}
	return client
}

// Echoer copies a connection back to itself until EOF or ctx ends, through a small
// buffer: io.Copy would allocate 32 KiB per connection, and the garbage collections
// that costs the backend would dominate the tail of the benchmarks that use it.
func Echoer(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
