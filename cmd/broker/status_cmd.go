package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

const statusUsage = "[-c FILE | --socket S] [--json]\n\n" +
	"Shows every service of the running broker at a glance: mode, state, connections open,\n" +
	"Hellos and refusals since start, and each live backend (version, pid, uptime, state).\n" +
	"One admin request to any of the broker's sockets reports all of its services."

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", statusUsage, stderr)
	asJSON := fs.Bool("json", false, "print the broker's STATUS document (JSON) instead of the table")
	socket := fs.String("socket", "", "a control socket of the broker")
	cfgPath := fs.String("c", "", "broker.toml whose broker to ask (through the first socket that answers)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up on a socket that has not answered within this")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "broker status: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	sockets, code := statusSockets(*socket, *cfgPath, stderr)
	if code != 0 {
		return code
	}
	req := &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true}
	var errs []string
	for _, s := range sockets {
		reply, err := adminExchange(ctx, s, req, *timeout)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if reply.Kind != wirepb.AdminReplyKind_JSON {
			errs = append(errs, fmt.Sprintf("%s: STATUS reply is %s, not JSON", s, reply.Kind))
			continue
		}
		if *asJSON {
			fmt.Fprint(stdout, reply.Body)
			return exitOK
		}
		var st admin.StatusReply
		var env admin.Envelope
		if err := json.Unmarshal([]byte(reply.Body), &st); err != nil {
			errs = append(errs, fmt.Sprintf("%s: decode STATUS: %v", s, err))
			continue
		}
		json.Unmarshal([]byte(reply.Body), &env)
		st.WriteTable(stdout, time.UnixMilli(env.GeneratedAtUnixMS))
		return exitOK
	}
	fmt.Fprintf(stderr, "broker status: no broker answered:\n  %s\n", strings.Join(errs, "\n  "))
	return exitFailure
}

// statusSockets is --socket, or every socket of -c FILE in order: a service still binding
// has no listener, another of the same broker answers for all.
func statusSockets(socket, cfgPath string, stderr io.Writer) ([]string, int) {
	switch {
	case socket != "" && cfgPath != "":
		fmt.Fprintln(stderr, "broker status: give --socket or -c, not both")
		return nil, exitUsage
	case socket != "":
		return []string{socket}, 0
	case cfgPath == "":
		fmt.Fprintln(stderr, "broker status: -c FILE or --socket S is required")
		return nil, exitUsage
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "broker status: %v\n", err)
		return nil, exitFailure
	}
	var out []string
	for _, s := range cfg.Services {
		out = append(out, s.Socket)
	}
	return out, 0
}
