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

// WithHandoff opts into adoption (broker.md §7): Connect sets capability bit 0 and, when
// the broker issues a token, waits (bounded by WithHandoffWait, default 2 s) for the
// handoff-ready EVENT and then keeps the connection that carried the Hello, now served by
// the backend. Anything else falls back to dialling backend_pipe, silently.
func WithHandoff() Option {
	return func(o *options) { o.handoff = true; o.caps |= wire.CapHandlePassing }
}

// MaxEarlyData is the largest payload WithEarlyData sends ahead of the handoff-ready
// EVENT; it fits a socket buffer, so writing it never blocks. Larger payloads are
// written once the connection is established.
const MaxEarlyData = 16 << 10

// WithEarlyData has Connect send b as the first bytes of the data connection, exactly
// once. With WithHandoff, Connect sets capability bit 1 (ours) and, when Negotiated
// grants it with a token, writes b on the control connection right after Negotiated,
// before the handoff-ready EVENT: the backend finds it buffered when it adopts the
// socket, which saves a round trip. When the EVENT does not come, b goes to backend_pipe
// instead (the backend writes the EVENT before it reads, so nobody read it). Without a
// grant, b is written after adoption or on backend_pipe. Connect does not modify b.
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
