// Package backend lets a Go program serve as a running-process broker v1 backend in a few
// lines, in either mode:
//
//	srv, err := backend.FromEnv() // launch mode: started by the broker
//	// or, registered mode: started by hand, binds its own socket
//	srv, err := backend.New(backend.Options{Endpoint: "/run/user/1000/mysvc.sock"})
//	err = srv.Serve(ctx, func(ctx context.Context, conn net.Conn) { ... })
//
// The Server answers the broker's identity probe (payload protocol 0xB232) with this
// process's real identity and hands every other connection to the handler.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/identity"
	"github.com/rpbroker/broker/wire/wirepb"
)

// DefaultPeekTimeout is how long a new connection may take to show whether it is a probe.
// A client that waits for the server to speak first reaches its handler after this delay,
// with nothing consumed; a client whose first byte is not 0x01 reaches it at once.
const DefaultPeekTimeout = 200 * time.Millisecond

// DefaultGrace is how long Serve waits, after ctx is cancelled, for handlers to return on
// their own before it closes their connections.
const DefaultGrace = 5 * time.Second

// Handler serves one data connection. It must return when ctx is cancelled (or when conn
// is closed under it after the grace period). Serve closes conn after the handler returns.
type Handler func(ctx context.Context, conn net.Conn)

// Options configure a Server. Launch-mode fields come from the environment (FromEnv).
type Options struct {
	// Endpoint is the socket path the broker knows the backend by. In registered mode the
	// Server binds it (mode 0600, replacing a stale socket); in launch mode it is the
	// backend pipe and the listener is usually inherited.
	Endpoint string
	// ListenerFD is an inherited listening socket (launch mode); 0 means none.
	ListenerFD int

	ServiceName    string
	ServiceVersion string
	Namespace      string
	Instance       string
	Traceparent    string
	Tracestate     string
	IsDaemon       bool

	// HandoffEndpoint, when set, is bound (mode 0600) next to Endpoint: the broker passes
	// negotiated client connections there (docs/protocol.md, "Handoff") and they reach the same Handler.
	HandoffEndpoint string
	// AcceptHandoff, if set, may decline a handoff by its token; a declined client
	// reconnects through the backend pipe.
	AcceptHandoff func(token []byte) bool

	// PeekTimeout overrides DefaultPeekTimeout; Grace overrides DefaultGrace.
	PeekTimeout time.Duration
	Grace       time.Duration
	// OnError, if set, receives per-connection failures (a probe answer that could not be
	// written, a transient accept error). They never stop the Server.
	OnError func(error)
}

// Server is one backend's listener and connection dispatcher. Serve it once.
type Server struct {
	opts        Options
	peekTimeout time.Duration
	grace       time.Duration
	hasher      identity.Hasher

	mu       sync.Mutex
	ln       *net.UnixListener
	hln      *net.UnixListener // handoff listener, nil without HandoffEndpoint
	seen     tokenSet
	endpoint string
	self     *wirepb.DaemonProcess
	served   bool
}

// New validates opts. Nothing is bound until Listen or Serve.
func New(opts Options) (*Server, error) {
	if opts.Endpoint == "" && opts.ListenerFD == 0 {
		return nil, errors.New("backend: no endpoint and no inherited listener")
	}
	s := &Server{opts: opts, peekTimeout: opts.PeekTimeout, grace: opts.Grace}
	if s.peekTimeout <= 0 {
		s.peekTimeout = DefaultPeekTimeout
	}
	if s.grace <= 0 {
		s.grace = DefaultGrace
	}
	return s, nil
}

// Options returns the options the Server was built with.
func (s *Server) Options() Options { return s.opts }

// Endpoint is the path the backend is reachable at (known after Listen).
func (s *Server) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endpoint == "" {
		return s.opts.Endpoint
	}
	return s.endpoint
}

// Identity is what the Server answers to probes (nil before Listen).
func (s *Server) Identity() *wirepb.DaemonProcess {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.self == nil {
		return nil
	}
	return proto.Clone(s.self).(*wirepb.DaemonProcess)
}

// Listen adopts the inherited listener or binds the endpoint, and computes the identity
// once so the first probe is answered without hashing. Serve calls it if needed; calling
// it first lets a program report a bind failure before it announces itself. A listened
// Server that is never served must be closed.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	if s.served {
		return errors.New("backend: server already served")
	}
	var ln *net.UnixListener
	var err error
	if s.opts.ListenerFD != 0 {
		ln, err = adopt(s.opts.ListenerFD)
	} else {
		ln, err = bind(s.opts.Endpoint)
	}
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	endpoint := s.opts.Endpoint
	if endpoint == "" {
		endpoint = ln.Addr().String()
	}
	self, err := s.hasher.Self(endpoint)
	if err != nil {
		ln.Close()
		return fmt.Errorf("backend: %w", err)
	}
	var hln *net.UnixListener
	if s.opts.HandoffEndpoint != "" {
		if hln, err = bind(s.opts.HandoffEndpoint); err != nil {
			ln.Close()
			return fmt.Errorf("backend: handoff endpoint: %w", err)
		}
	}
	s.ln, s.hln, s.endpoint, s.self = ln, hln, endpoint, self
	return nil
}

// Close releases a listener that Listen opened and Serve never ran on. Close during Serve
// stops it like a cancelled ctx.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = true
	if s.ln == nil {
		return nil
	}
	if s.hln != nil {
		s.hln.Close()
	}
	return s.ln.Close()
}

// Serve accepts connections until ctx is cancelled, serving each concurrently: probes are
// answered, everything else goes to h. On cancellation it closes the listener, cancels the
// handlers' context, waits up to the grace period for them, then closes the connections
// still open and waits for the rest. It returns only once every handler has returned: nil
// after cancellation, else the accept error that stopped it.
func (s *Server) Serve(ctx context.Context, h Handler) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.served {
		s.mu.Unlock()
		return errors.New("backend: server already served")
	}
	s.served = true
	ln, hln := s.ln, s.hln
	s.mu.Unlock()
	defer ln.Close()

	connCtx, cancelConns := context.WithCancel(ctx)
	defer cancelConns()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	var open connSet
	var herr error
	var hwg sync.WaitGroup
	if hln != nil {
		defer hln.Close()
		hstop := context.AfterFunc(ctx, func() { hln.Close() })
		defer hstop()
		hwg.Go(func() {
			herr = s.acceptLoop(ctx, hln, func(c net.Conn) {
				wg.Go(func() { s.serveHandoff(connCtx, c.(*net.UnixConn), h, &open, wg.Go) })
			})
		})
	}
	err := s.acceptLoop(ctx, ln, func(c net.Conn) {
		open.add(c)
		wg.Go(func() {
			defer open.remove(c)
			s.serveConn(connCtx, c, h)
		})
	})
	ln.Close()
	if hln != nil {
		hln.Close()
		hwg.Wait()
		err = errors.Join(err, herr)
	}
	cancelConns()
	s.drain(&wg, &open)
	return err
}

// acceptLoop hands accepted connections to dispatch. Transient failures (fd exhaustion,
// aborted handshakes) back off and retry; the loop ends cleanly when ctx is cancelled or
// the listener is closed.
func (s *Server) acceptLoop(ctx context.Context, ln *net.UnixListener, dispatch func(net.Conn)) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err == nil {
			backoff = 5 * time.Millisecond
			dispatch(c)
			continue
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return nil
		}
		if !transient(err) {
			return fmt.Errorf("backend %s: accept: %w", s.endpoint, err)
		}
		s.report(fmt.Errorf("backend %s: accept (retrying in %v): %w", s.endpoint, backoff, err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

func transient(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM)
}

// drain waits for handlers, closing their connections once the grace period is over.
func (s *Server) drain(wg *sync.WaitGroup, open *connSet) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }() // ends when the last handler returns
	t := time.NewTimer(s.grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		open.closeAll()
		<-done
	}
}

func (s *Server) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}
