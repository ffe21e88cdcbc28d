package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func runHello(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("hello", "[--socket S | -c FILE] SERVICE VERSION", stderr)
	socket := fs.String("socket", "", "control socket path")
	cfgPath := fs.String("c", "", "broker.toml to find the service's socket in")
	handoff := fs.Bool("handoff", false, "set capability bit 0 (HANDLE_PASSING)")
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
	h := &wirepb.Hello{
		ClientMinProtocol: wire.ProtocolVersion, ClientMaxProtocol: wire.ProtocolVersion,
		ServiceName: pos[0], WantedVersion: pos[1], PeerPid: uint32(os.Getpid()),
		ClientLibName: "broker-cli", ClientLibVersion: "1",
	}
	if *handoff {
		h.ClientCapabilities = wire.CapHandlePassing
	}
	n, err := client.Hello(ctx, path, h)
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
	fmt.Fprintf(stdout, "negotiated: backend_pipe=%s daemon_version=%s connection_id=%d protocol=%d keepalive=%ds\n",
		n.BackendPipe, n.DaemonVersion, n.ConnectionId, n.NegotiatedProtocol, n.KeepaliveIntervalSecs)
	return exitOK
}
