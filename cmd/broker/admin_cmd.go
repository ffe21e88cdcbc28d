package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

const adminVerbs = "status, dump, list-instances, healthz, readyz, backend-health, config, diagnose, metrics, shutdown"

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("admin", "VERB [--json] [--socket S | -c FILE [--service NAME]]\n\n"+
		"Sends one admin verb to the broker and prints its reply: a human form, or JSON with --json.\n"+
		"verbs: "+adminVerbs, stderr)
	asJSON := fs.Bool("json", false, "print the reply as JSON (text verbs: a {command, exit_code, content_type, body} object)")
	socket := fs.String("socket", "", "control socket path")
	cfgPath := fs.String("c", "", "broker.toml to find the socket in")
	service := fs.String("service", "", "with -c: the service whose socket to use (default: the first); with backend-health: the service to report")
	output := fs.String("output", "", "with diagnose: write the bundle to this absolute path (never overwrites)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up when the socket has not answered within this")
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
	path, code := adminSocket(*socket, *cfgPath, *service, stderr, "admin")
	if code != 0 {
		return code
	}
	req := &wirepb.AdminRequest{Verb: verb, Json: *asJSON, OutputPath: *output}
	if verb == wirepb.AdminVerb_BACKEND_HEALTH && *service != "*" { // "*": every service
		req.ServiceName = *service
	}
	reply, err := adminExchange(ctx, path, req, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "broker admin %s: %v\n", pos[0], err)
		return exitFailure
	}
	body, err := renderReply(verb, reply, *asJSON)
	if err != nil {
		fmt.Fprintf(stderr, "broker admin %s: %s: %v\n", pos[0], path, err)
		return exitFailure
	}
	fmt.Fprint(stdout, body)
	if body != "" && !strings.HasSuffix(body, "\n") {
		fmt.Fprintln(stdout)
	}
	return int(reply.ExitCode)
}

// renderReply gives the form asked for: JSON replies as they came with --json, else their
// human form; text replies as they came, else wrapped in a JSON object with --json.
func renderReply(verb wirepb.AdminVerb, reply *wirepb.AdminReply, asJSON bool) (string, error) {
	switch {
	case reply.Kind == wirepb.AdminReplyKind_JSON && asJSON:
		return reply.Body, nil
	case reply.Kind == wirepb.AdminReplyKind_JSON:
		return admin.Human(verb, []byte(reply.Body))
	case asJSON:
		b, err := admin.Encode(strings.ToLower(verb.String()), time.Now().UnixMilli(), admin.TextReply{
			Command: strings.ToLower(verb.String()), ExitCode: reply.ExitCode, ContentType: reply.ContentType, Body: reply.Body,
		})
		return string(b), err
	}
	return reply.Body, nil
}

// adminSocket picks --socket, or the socket of --service in -c FILE. Unlike a Hello, an
// admin request goes to a service the config names: a name it lacks is an error, not the
// "*" service's socket.
func adminSocket(socket, cfgPath, service string, stderr io.Writer, cmd string) (string, int) {
	if socket != "" || cfgPath == "" || service == "" {
		return resolveSocket(socket, cfgPath, service, stderr, cmd)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "broker %s: %v\n", cmd, err)
		return "", exitFailure
	}
	var names []string
	for _, s := range cfg.Services {
		if s.Name == service {
			return s.Socket, 0
		}
		names = append(names, s.Name)
	}
	fmt.Fprintf(stderr, "broker %s: --service %q: %s has no [[service]] of that name (it has: %s)\n",
		cmd, service, cfgPath, strings.Join(names, ", "))
	return "", exitFailure
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
