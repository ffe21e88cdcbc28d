package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func runHello(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("hello", "[--socket S | -c FILE] [--send DATA [--handoff]] SERVICE VERSION", stderr)
	socket := fs.String("socket", "", "control socket path")
	cfgPath := fs.String("c", "", "broker.toml to find the service's socket in")
	handoff := fs.Bool("handoff", false, "set capability bit 0 (HANDLE_PASSING); with --send, adopt the handed-off connection")
	send := fs.String("send", "", "after negotiating, send DATA to the backend and print its reply")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "broker hello: want SERVICE VERSION, e.g. broker hello --socket /run/x.sock zccache 1.11.20")
		return exitUsage
	}
	path, code := resolveSocket(*socket, *cfgPath, pos[0], stderr, "hello")
	if code != 0 {
		return code
	}
	if isFlagSet(fs, "send") {
		return helloAndSend(ctx, path, pos[0], pos[1], *send, *handoff, stdout, stderr)
	}
	h := &wirepb.Hello{
		ClientMinProtocol: wire.ProtocolVersion, ClientMaxProtocol: wire.ProtocolVersion,
		ServiceName: pos[0], WantedVersion: pos[1], PeerPid: uint32(os.Getpid()),
		ClientLibName: "broker-cli", ClientLibVersion: "1",
	}
	if *handoff {
		h.ClientCapabilities = wire.CapHandlePassing
	}
	n, err := client.Hello(ctx, path, h)
	return printHelloResult(n, err, stdout, stderr)
}

// printHelloResult prints Negotiated or the refusal; it returns the exit code.
func printHelloResult(n *wirepb.Negotiated, err error, stdout, stderr io.Writer) int {
	var ref *client.RefusedError
	switch {
	case errors.As(err, &ref):
		fmt.Fprintf(stdout, "refused: %s: %s", ref.Code, ref.Reason)
		if ref.RetryAfter > 0 {
			fmt.Fprintf(stdout, " (retry after %dms)", ref.RetryAfter.Milliseconds())
		}
		fmt.Fprintln(stdout)
		return exitFailure
	case err != nil:
		fmt.Fprintf(stderr, "broker hello: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "negotiated: backend_pipe=%s daemon_version=%s connection_id=%d protocol=%d keepalive=%ds",
		n.BackendPipe, n.DaemonVersion, n.ConnectionId, n.NegotiatedProtocol, n.KeepaliveIntervalSecs)
	if len(n.HandlePassedToken) > 0 {
		fmt.Fprint(stdout, " handoff_token=yes")
	}
	fmt.Fprintln(stdout)
	return exitOK
}

// helloAndSend negotiates through the client library, sends data to the backend on the
// data connection (the adopted socket after a handoff, else backend_pipe) and prints the
// reply until the backend closes.
func helloAndSend(ctx context.Context, socket, service, version, data string, handoff bool, stdout, stderr io.Writer) int {
	var opts []client.Option
	if handoff {
		opts = append(opts, client.WithHandoff())
	}
	conn, n, err := client.Connect(ctx, socket, service, version, opts...)
	if code := printHelloResult(n, err, stdout, stderr); code != exitOK {
		return code
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, data); err != nil {
		fmt.Fprintf(stderr, "broker hello: send to backend: %v\n", err)
		return exitFailure
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	reply, err := io.ReadAll(conn)
	via := "backend_pipe"
	if conn.RemoteAddr().String() == socket {
		via = "handoff, on the socket that carried the Hello"
	}
	fmt.Fprintf(stdout, "backend replied: %q (via %s)\n", reply, via)
	if err != nil {
		fmt.Fprintf(stderr, "broker hello: read from backend: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
