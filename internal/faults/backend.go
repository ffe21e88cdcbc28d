package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rpbroker/broker/sdk/backend"
	"github.com/rpbroker/broker/wire"
)

// Backend roles, by the file name the program is installed under.
const (
	roleEcho  = "rpbf-echo"  // echoes every data connection
	roleCrash = "rpbf-crash" // ready (answers the probe), then exits 1 on its first data connection
)

// backendRole reports whether this process was started by a broker as one of our
// backends, and which.
func backendRole() (string, bool) {
	role := filepath.Base(os.Args[0])
	if role != roleEcho && role != roleCrash {
		return "", false
	}
	_, launched := os.LookupEnv(wire.EnvBackendPipe)
	return role, launched
}

// serveBackend runs the backend until SIGTERM; it returns the exit code.
func serveBackend(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := backend.FromEnv()
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	h := func(ctx context.Context, c net.Conn) {
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		io.Copy(c, c)
	}
	if role == roleCrash {
		// The crash comes right after the broker saw the backend ready and a client used
		// it: the pid goes out first so the client can wait for the exit.
		h = func(_ context.Context, c net.Conn) {
			fmt.Fprintf(c, "%d\n", os.Getpid())
			os.Exit(1)
		}
	}
	if err := srv.Serve(ctx, h); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
		return 1
	}
	return 0
}
