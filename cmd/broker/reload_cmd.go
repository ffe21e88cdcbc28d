package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire/wirepb"
)

type reloadStatus struct {
	BrokerPID    int `json:"broker_pid"`
	ConfigReload struct {
		Attempts uint64   `json:"attempts"`
		OK       bool     `json:"ok"`
		Error    string   `json:"error"`
		Plan     []string `json:"plan"`
	} `json:"config_reload"`
}

const reloadUsage = "-c FILE [--socket S] [--timeout D]\n\n" +
	"Send the broker running FILE a SIGHUP and print the plan it applied. The broker is found by\n" +
	"the sockets it serves now (the process running `broker -c FILE`), so a reload that moves\n" +
	"every socket works. Exit 0 when applied, 1 when the broker rejected the file (the running\n" +
	"config is unchanged) or did not answer within --timeout."

// runReload finds the running broker, sends it SIGHUP (the single reload funnel) and
// prints the plan it applied or the error it reported.
func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reload", reloadUsage, stderr)
	cfgPath := fs.String("c", "", "broker.toml of the running broker")
	socket := fs.String("socket", "", "a control socket the running broker serves now (default: found from -c)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up when the broker has not reported the reload within this")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) > 0:
		return usageError(stderr, "reload", reloadUsage, "unexpected argument %q", pos[0])
	case *socket == "" && *cfgPath == "":
		return usageError(stderr, "reload", reloadUsage, "-c FILE or --socket S is required")
	case *timeout <= 0:
		return usageError(stderr, "reload", reloadUsage, "--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	// The socket's I/O deadline can end a request a moment before ctx reports it.
	timedOut := func() bool { return ctx.Err() == context.DeadlineExceeded || !time.Now().Before(deadline) }
	fired := func(what string) int {
		fmt.Fprintf(stderr, "broker reload: --timeout %s fired %s\n", *timeout, what)
		return exitFailure
	}

	candidates := func() []string { return []string{*socket} }
	if *socket == "" {
		candidates = func() []string { return reloadCandidates(*cfgPath) }
	}
	path, before, err := findBroker(ctx, candidates())
	if err != nil {
		if timedOut() {
			return fired("before the broker answered a status request (is it wedged? see its log, and `broker doctor`)")
		}
		fmt.Fprintf(stderr, "broker reload: is the broker running? %v\n", err)
		return exitFailure
	}
	if err := syscall.Kill(before.BrokerPID, syscall.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "broker reload: signal broker pid %d: %v\n", before.BrokerPID, err)
		return exitFailure
	}
	for {
		// Ask the socket that answered and, once a reload has moved it, any other the
		// broker serves now or the file names.
		for _, s := range append([]string{path}, candidates()...) {
			st, err := fetchReloadStatus(ctx, s)
			if err != nil || st.BrokerPID != before.BrokerPID || st.ConfigReload.Attempts <= before.ConfigReload.Attempts {
				continue
			}
			if !st.ConfigReload.OK {
				fmt.Fprintf(stderr, "broker reload: rejected, the running config is unchanged: %s\n", st.ConfigReload.Error)
				return exitFailure
			}
			for _, l := range st.ConfigReload.Plan {
				fmt.Fprintln(stdout, l)
			}
			return exitOK
		}
		select {
		case <-ctx.Done():
			if timedOut() {
				return fired(fmt.Sprintf("after SIGHUP to broker pid %d, which has not reported a reload result: "+
					"check its log (journalctl --user -u broker, or its stderr) and `broker admin status --socket %s`", before.BrokerPID, path))
			}
			return exitFailure
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// reloadCandidates lists the sockets to ask for the broker running cfgPath: first those
// the broker process listens on now, then those the file names (a broker started some
// other way, e.g. from a file since renamed, is still found when it kept a socket).
func reloadCandidates(cfgPath string) []string {
	var out []string
	if pids, err := brokersFor(cfgPath); err == nil {
		for _, pid := range pids {
			socks, _ := listeningSockets(pid)
			out = append(out, socks...)
		}
	}
	if cfg, err := loadConfig(cfgPath); err == nil {
		for _, svc := range cfg.Services {
			if !slices.Contains(out, svc.Socket) {
				out = append(out, svc.Socket)
			}
		}
	}
	return out
}

// findBroker returns the first of sockets that answers and the broker's status before
// the reload.
func findBroker(ctx context.Context, sockets []string) (string, *reloadStatus, error) {
	var errs []error
	for _, socket := range sockets {
		st, err := fetchReloadStatus(ctx, socket)
		if err == nil {
			return socket, st, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", nil, errors.New("no process runs this config and the file names no socket; pass --socket")
	}
	return "", nil, fmt.Errorf("no control socket answers (pass --socket with one the broker serves now): %w", errors.Join(errs...))
}

func fetchReloadStatus(ctx context.Context, socket string) (*reloadStatus, error) {
	reply, err := client.Admin(ctx, socket, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true})
	if err != nil {
		return nil, err
	}
	var st reloadStatus
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil {
		return nil, fmt.Errorf("%s: not a broker's status answer: %w", socket, err)
	}
	if st.BrokerPID <= 0 {
		return nil, fmt.Errorf("%s: the status answer names no broker pid", socket)
	}
	return &st, nil
}
