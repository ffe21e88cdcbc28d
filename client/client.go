// Package client speaks the broker v1 control protocol from the client side: one Hello
// (or one admin verb) per connection, with a deadline.
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// DefaultTimeout bounds an exchange when ctx has no deadline.
const DefaultTimeout = 5 * time.Second

// RefusedError is a typed refusal from the broker.
type RefusedError struct {
	Code       wirepb.ErrorCode
	Reason     string
	RetryAfter time.Duration
	Details    map[string]string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("broker refused: %s: %s", e.Code, e.Reason)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Exchange dials socket, writes one frame and reads one reply frame; it returns the
// connection still open so a caller can wait for a follow-up (the handoff EVENT).
func Exchange(ctx context.Context, socket string, f *wirepb.Frame) (*net.UnixConn, *wirepb.Frame, error) {
	return exchange(ctx, socket, f, nil)
}

// exchange is Exchange with extra bytes written behind the frame in the same write (early
// data with the Hello). The broker reads exactly one frame, so they stay queued unread.
// Only the reply frame is read: a reset the broker causes by closing with them unread
// surfaces on a later read, never before the reply (queued data is read first).
func exchange(ctx context.Context, socket string, f *wirepb.Frame, extra []byte) (*net.UnixConn, *wirepb.Frame, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	conn, err := dialUnix(ctx, socket)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to broker %s: %w", socket, err)
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	b, err := wire.EncodeFrame(f)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	// One write: with at most MaxEarlyData behind the frame it is one socket buffer, queued
	// whole or not at all.
	if _, err := conn.Write(append(b, extra...)); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("broker %s: write frame: %w", socket, err)
	}
	reply, err := wire.ReadFrame(conn, wire.MaxFrameBody)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("broker %s: read reply: %w", socket, err)
	}
	return conn, reply, nil
}

// NewHelloFrame wraps h in a v1 REQUEST frame with a random request id.
func NewHelloFrame(h *wirepb.Hello) (*wirepb.Frame, error) {
	return wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoControl, randomID(), h)
}

// Hello sends one Hello and returns Negotiated or a *RefusedError.
func Hello(ctx context.Context, socket string, h *wirepb.Hello) (*wirepb.Negotiated, error) {
	f, err := NewHelloFrame(h)
	if err != nil {
		return nil, err
	}
	conn, reply, err := Exchange(ctx, socket, f)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return DecodeHelloReply(reply)
}

// DecodeHelloReply turns a reply frame into Negotiated or a *RefusedError.
func DecodeHelloReply(reply *wirepb.Frame) (*wirepb.Negotiated, error) {
	var hr wirepb.HelloReply
	if err := proto.Unmarshal(reply.Payload, &hr); err != nil {
		return nil, fmt.Errorf("decode HelloReply: %w", err)
	}
	switch r := hr.Result.(type) {
	case *wirepb.HelloReply_Negotiated:
		return r.Negotiated, nil
	case *wirepb.HelloReply_Refused:
		return nil, &RefusedError{
			Code: r.Refused.Code, Reason: r.Refused.Reason, Details: r.Refused.Details,
			RetryAfter: time.Duration(r.Refused.RetryAfterMs) * time.Millisecond,
		}
	}
	return nil, errors.New("HelloReply carries neither negotiated nor refused")
}

// Admin sends one admin verb and returns the reply.
func Admin(ctx context.Context, socket string, req *wirepb.AdminRequest) (*wirepb.AdminReply, error) {
	f, err := wire.NewMessageFrame(wirepb.FrameKind_REQUEST, wire.ProtoAdmin, randomID(), req)
	if err != nil {
		return nil, err
	}
	conn, reply, err := Exchange(ctx, socket, f)
	if err != nil {
		return nil, err
	}
	conn.Close()
	var ar wirepb.AdminReply
	if err := proto.Unmarshal(reply.Payload, &ar); err != nil {
		return nil, fmt.Errorf("decode AdminReply: %w", err)
	}
	return &ar, nil
}

func randomID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// dialUnix connects to a Unix socket, bounded by ctx or DefaultTimeout when ctx has no
// deadline.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
