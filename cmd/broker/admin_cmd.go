package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

const adminVerbs = "status, dump, list-instances, healthz, readyz, backend-health, config, diagnose, metrics, shutdown"

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("admin", "VERB [--json] [--socket S | -c FILE [--service NAME]]\n\nverbs: "+adminVerbs, stderr)
	asJSON := fs.Bool("json", false, "ask for JSON where the verb supports it")
	socket := fs.String("socket", "", "control socket path")
	cfgPath := fs.String("c", "", "broker.toml to find the socket in")
	service := fs.String("service", "", "with -c: the service whose socket to use (default: the first); with backend-health: the service to report")
	output := fs.String("output", "", "with diagnose: write the bundle to this absolute path (never overwrites)")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "broker admin: want exactly one verb (%s)\n", adminVerbs)
		return exitUsage
	}
	verb, ok := admin.VerbByName(pos[0])
	if !ok {
		fmt.Fprintf(stderr, "broker admin: unknown verb %q; verbs: %s\n", pos[0], adminVerbs)
		return exitUsage
	}
	path, code := resolveSocket(*socket, *cfgPath, *service, stderr, "admin")
	if code != 0 {
		return code
	}
	req := &wirepb.AdminRequest{Verb: verb, Json: *asJSON, OutputPath: *output}
	if verb == wirepb.AdminVerb_BACKEND_HEALTH {
		req.ServiceName = *service
	}
	reply, err := client.Admin(ctx, path, req)
	if err != nil {
		fmt.Fprintf(stderr, "broker admin %s: %v\n", pos[0], err)
		return exitFailure
	}
	fmt.Fprint(stdout, reply.Body)
	if reply.Body != "" && !strings.HasSuffix(reply.Body, "\n") {
		fmt.Fprintln(stdout)
	}
	return int(reply.ExitCode)
}

// resolveSocket picks --socket, or the socket of --service in -c FILE.
func resolveSocket(socket, cfgPath, service string, stderr io.Writer, cmd string) (string, int) {
	switch {
	case socket != "" && cfgPath != "":
		fmt.Fprintf(stderr, "broker %s: give --socket or -c, not both\n", cmd)
		return "", exitUsage
	case socket != "":
		return socket, 0
	case cfgPath != "":
		p, err := socketFor(cfgPath, service)
		if err != nil {
			fmt.Fprintf(stderr, "broker %s: %v\n", cmd, err)
			return "", exitFailure
		}
		return p, 0
	}
	fmt.Fprintf(stderr, "broker %s: --socket S or -c FILE is required\n", cmd)
	return "", exitUsage
}
