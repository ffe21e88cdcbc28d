// Command echo-backend is a minimal running-process broker v1 backend built on sdk/backend:
// it answers the broker's identity probe and echoes every byte of every data connection.
//
// Launch mode (started by the broker): everything comes from the environment, no flags.
// Registered mode (started by hand, named in the broker config):
//
//	go run ./examples/echo-backend [-endpoint ~/.cache/rpb-echo/backend.sock] [-handoff-endpoint ~/.cache/rpb-echo/handoff.sock]
//
// It logs one line on start and exits 0 on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rpbroker/broker/sdk/backend"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 after a clean shutdown, 1 on a serve failure, 2 on usage.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("echo-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", "~/.cache/rpb-echo/backend.sock", "socket path to bind in registered mode (~ is your home; its directory is created, mode 0700)")
	version := fs.String("version", "1.0.0", "service version this backend serves in registered mode (informational)")
	handoff := fs.String("handoff-endpoint", "", "registered mode: also accept connections handed off by the broker on this socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, p := range []*string{endpoint, handoff} {
		if home := strings.HasPrefix(*p, "~/"); home {
			// Under your home (the default), the directory is created: a per-user one
			// nobody else can enter, as the broker wants for sockets. An explicit path's
			// directory must exist.
			*p = expandHome(*p)
			if err := os.MkdirAll(filepath.Dir(*p), 0o700); err != nil {
				fmt.Fprintf(stderr, "echo-backend: %v\n", err)
				return 1
			}
		}
	}

	mode := "launch"
	srv, err := backend.FromEnv()
	if errors.Is(err, backend.ErrNotLaunched) {
		mode = "registered"
		srv, err = backend.New(backend.Options{Endpoint: *endpoint, ServiceVersion: *version, HandoffEndpoint: *handoff})
	}
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintf(stderr, "echo-backend: %v\n", err)
		return 1
	}
	o := srv.Options()
	fmt.Fprintf(stderr, "echo-backend: serving pid=%d endpoint=%s mode=%s service=%q version=%q\n",
		os.Getpid(), srv.Endpoint(), mode, o.ServiceName, o.ServiceVersion)
	if err := srv.Serve(ctx, echo); err != nil {
		fmt.Fprintf(stderr, "echo-backend: %v\n", err)
		return 1
	}
	return 0
}

// echo copies the connection back to itself until the client half-closes or ctx ends.
func echo(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, _ = io.Copy(conn, conn)
}

// expandHome turns a leading "~/" into the user's home directory.
func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}
