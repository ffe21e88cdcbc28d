package client

import (
	"time"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// DefaultHandoffWait bounds the wait for the handoff-ready EVENT after Negotiated.
const DefaultHandoffWait = 2 * time.Second

// LibName is what Connect reports as client_lib_name.
const LibName = "rpbroker-go"

// Option tunes Connect.
type Option func(*options)

type options struct {
	handoff     bool
	handoffWait time.Duration
	caps        uint64
	cache       *Cache
	retries     int
	hello       func(*wirepb.Hello)
	early       []byte
}

// WithHandoff opts into adoption (docs/protocol.md, "Handoff"): Connect sets capability bit 0 and, when
// the broker issues a token, waits (bounded by WithHandoffWait, default 2 s) for the
// handoff-ready EVENT and then keeps the connection that carried the Hello, now served by
// the backend. Anything else falls back to dialling backend_pipe, silently.
//
// Connect also sets bit 2 (ours, wire.CapWriteAhead). When our broker grants it, Connect
// returns at Negotiated, without waiting for the EVENT: the first writes (up to
// MaxEarlyData) go out at once, ahead of the EVENT, and are kept until the first Read
// settles the handoff; if nobody adopted the connection they are sent through
// backend_pipe, exactly once. The connection is then a wrapper rather than a
// *net.UnixConn.
func WithHandoff() Option {
	return func(o *options) { o.handoff = true; o.caps |= wire.CapHandlePassing }
}

// MaxEarlyData is the largest payload WithEarlyData sends with the Hello; with the Hello
// it fits one socket buffer, so the write never blocks and is queued whole or not at all.
// Larger payloads are written once the connection is established.
const MaxEarlyData = 16 << 10

// WithEarlyData has Connect send b as the first bytes of the data connection, exactly
// once. With WithHandoff, Connect sets capability bit 1 (ours) and writes b in the same
// write as the Hello; the broker reads exactly one frame, so b waits unread in the
// control connection. Negotiated then either grants bit 1 with a token (the broker hands
// off only to a backend proven to write the EVENT before it reads: it finds b buffered
// when it adopts the socket, which saves a round trip; when the EVENT does not come,
// nobody read b and it goes to backend_pipe) or issues no token, and b goes to
// backend_pipe: our broker never hands off a bit-1 client without the grant. A v1 broker
// ignores bit 1; should one issue a token anyway, b counts as delivered once the EVENT
// arrives, and goes to backend_pipe otherwise (a v1 backend that adopted the connection
// but whose EVENT never reached the client within the wait could then see b twice).
// Without WithHandoff, b is written on backend_pipe. Connect does not modify b.
func WithEarlyData(b []byte) Option { return func(o *options) { o.early = b } }

// WithHandoffWait bounds the wait for the handoff-ready EVENT.
func WithHandoffWait(d time.Duration) Option { return func(o *options) { o.handoffWait = d } }

// WithCapabilities ORs raw capability bits into the Hello. Setting bit 0 without
// WithHandoff is legal: the token is ignored and backend_pipe is dialled.
func WithCapabilities(bits uint64) Option { return func(o *options) { o.caps |= bits } }

// WithCache lets Connect skip the Hello when c knows the backend endpoint for the same
// service and version; a failed direct dial falls back to a Hello (and refreshes c).
func WithCache(c *Cache) Option { return func(o *options) { o.cache = c } }

// WithRetry retries up to max times after RATE_LIMITED, FD_PRESSURE and
// BACKEND_SPAWN_FAILED refusals, waiting the broker's retry_after each time; a wait that
// would pass ctx's deadline returns the refusal instead.
func WithRetry(max int) Option { return func(o *options) { o.retries = max } }

// WithHello lets the caller fill informational Hello fields (client_version, request_id,
// keepalive); Connect sets the protocol range, service, version and capabilities.
func WithHello(f func(*wirepb.Hello)) Option { return func(o *options) { o.hello = f } }
