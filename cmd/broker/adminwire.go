package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// adminExchange sends one admin request and returns the broker's reply, or an error that
// says plainly when the socket is not a broker's control socket: nothing listens there,
// or what answered is not an admin reply to this request (a backend's endpoint, another
// program), or nothing answered within timeout.
func adminExchange(ctx context.Context, socket string, req *wirepb.AdminRequest, timeout time.Duration) (*wirepb.AdminReply, error) {
	var id [8]byte
	rand.Read(id[:])
	reqID := binary.LittleEndian.Uint64(id[:]) | 1 // never 0: a reply must echo it
	f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, reqID, req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, reply, err := client.Exchange(ctx, socket, f)
	if err != nil {
		return nil, notBroker(socket, err)
	}
	conn.Close()
	if reply.Kind != wirepb.FrameKind_RESPONSE || reply.PayloadProtocol != wire.ProtoAdmin || reply.RequestId != reqID {
		why := fmt.Sprintf("it answered a %s frame of protocol 0x%04X for request %d", reply.Kind, reply.PayloadProtocol, reply.RequestId)
		if reply.Kind == wirepb.FrameKind_REQUEST && reply.RequestId == reqID {
			why = "it sent the request back (an echoing backend?)"
		}
		if reply.PayloadProtocol == wire.ProtoControl {
			if _, err := client.DecodeHelloReply(reply); err != nil {
				why = "it answered with a Hello reply: " + err.Error()
			}
		}
		return nil, fmt.Errorf("%s is not a broker control socket: %s, not an admin reply", socket, why)
	}
	var ar wirepb.AdminReply
	if err := proto.Unmarshal(reply.Payload, &ar); err != nil {
		return nil, fmt.Errorf("%s is not a broker control socket: its admin reply does not decode: %w", socket, err)
	}
	return &ar, nil
}

func notBroker(socket string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no broker at %s: the socket does not exist (is the broker running?): %w", socket, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no broker at %s: nothing listens on the socket (a broker that died left it behind?): %w", socket, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.EAGAIN), isTimeout(err):
		return fmt.Errorf("%s did not answer the admin request in time: not a broker control socket, or the broker is stuck: %w", socket, err)
	}
	return fmt.Errorf("%s is not a broker control socket: %w", socket, err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
