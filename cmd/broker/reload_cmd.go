package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// runReload finds the running broker through a control socket of the config, sends it
// SIGHUP (the single reload funnel) and prints the plan it applied or the error.
func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reload", "-c FILE [--socket S]", stderr)
	cfgPath := fs.String("c", "", "broker.toml of the running broker")
	socket := fs.String("socket", "", "control socket of the running broker (default: the first socket of -c that answers)")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *socket == "" && *cfgPath == "" {
		fmt.Fprintln(stderr, "broker reload: -c FILE is required")
		return exitUsage
	}
	sockets := []string{*socket}
	if *socket == "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "broker reload: %v\n", err)
			return exitFailure
		}
		sockets = sockets[:0]
		for _, svc := range cfg.Services {
			sockets = append(sockets, svc.Socket)
		}
	}
	path, before, err := findBroker(ctx, sockets)
	if err != nil {
		fmt.Fprintf(stderr, "broker reload: is the broker running? %v\n", err)
		return exitFailure
	}
	if err := syscall.Kill(before.BrokerPID, syscall.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "broker reload: signal broker pid %d: %v\n", before.BrokerPID, err)
		return exitFailure
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		st, err := fetchReloadStatus(ctx, path)
		if err == nil && st.ConfigReload.Attempts > before.ConfigReload.Attempts {
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
			return exitFailure
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintln(stderr, "broker reload: the broker did not report the reload within a minute")
	return exitFailure
}

// findBroker returns the first of sockets that answers and the broker's status before
// the reload. Sockets come from the new config file, where a service it moves is not
// listening yet; any service it keeps will do.
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
		return "", nil, errors.New("the config names no service; pass --socket")
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
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}
