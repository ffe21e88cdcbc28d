package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/wire/wirepb"
)

const upgradeUsage = "[-c FILE | --socket S] [--binary PATH] [--timeout D]\n\n" +
	"Replace the running broker's binary in place: same pid, same sockets (no Hello refused),\n" +
	"same launched backends. The new binary (its own executable path, re-read from disk, or\n" +
	"--binary) first checks the config and the state format; any failure leaves the running\n" +
	"broker untouched. Exit 0 once the new image reports ready, 1 with the reason otherwise.\n" +
	"SIGUSR2 to the broker does the same without waiting."

// upgradeStatus is the part of admin STATUS --json the upgrade waits on.
type upgradeStatus struct {
	BrokerPID  int                  `json:"broker_pid"`
	Generation uint64               `json:"generation"`
	Version    string               `json:"version"`
	BuildID    string               `json:"build_id"`
	Upgrade    *admin.UpgradeStatus `json:"upgrade"`
}

func runUpgrade(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("upgrade", upgradeUsage, stderr)
	cfgPath := fs.String("c", "", "broker.toml of the running broker")
	socket := fs.String("socket", "", "a control socket the running broker serves (default: found from -c)")
	binary := fs.String("binary", "", "the new broker binary (default: the running broker's own path, re-read)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up when the new image has not reported ready within this")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) > 0:
		return usageError(stderr, "upgrade", upgradeUsage, "unexpected argument %q", pos[0])
	case *socket == "" && *cfgPath == "":
		return usageError(stderr, "upgrade", upgradeUsage, "-c FILE or --socket S is required")
	case *timeout <= 0:
		return usageError(stderr, "upgrade", upgradeUsage, "--timeout must be positive")
	}
	if *binary != "" {
		abs, err := filepath.Abs(*binary) // the broker's working directory is not ours
		if err != nil {
			return usageError(stderr, "upgrade", upgradeUsage, "--binary: %v", err)
		}
		*binary = abs
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "broker upgrade: "+format+"\n", a...)
		return exitFailure
	}
	candidates := []string{*socket}
	if *socket == "" {
		candidates = reloadCandidates(*cfgPath)
	}
	var path string
	var before *upgradeStatus
	var errs []error
	for _, c := range candidates {
		st, err := fetchUpgradeStatus(ctx, c)
		if err == nil {
			path, before = c, st
			break
		}
		errs = append(errs, err)
	}
	if before == nil {
		return fail("is the broker running? %v", errors.Join(errs...))
	}
	asked := time.Now()
	reply, err := adminExchange(ctx, path, &wirepb.AdminRequest{Verb: admin.VerbUpgrade, OutputPath: *binary}, *timeout)
	if err != nil {
		return fail("%v", err)
	}
	if reply.ExitCode != 0 {
		fmt.Fprint(stderr, "broker upgrade: "+reply.Body)
		return exitFailure
	}
	fmt.Fprint(stdout, reply.Body)
	for {
		st, err := fetchUpgradeStatus(ctx, path)
		switch {
		// Ready: the new image has adopted the backends and recorded the upgrade.
		case err == nil && st.BrokerPID == before.BrokerPID && st.Generation > before.Generation && st.Upgrade != nil && st.Upgrade.OK:
			took := time.Duration(st.Upgrade.TookMS * float64(time.Millisecond)).Round(time.Microsecond)
			fmt.Fprintf(stdout, "upgraded in place: pid %d, generation %d, version %s, build %s, took %s\n",
				st.BrokerPID, st.Generation, st.Version, st.BuildID, took)
			return exitOK
		case err == nil && st.Upgrade != nil && st.Upgrade.Error != "" && st.Upgrade.AtUnixMS >= asked.UnixMilli()-1:
			return fail("%s", st.Upgrade.Error)
		case err != nil && processGone(before.BrokerPID):
			return fail("the broker (pid %d) exited during the upgrade: the new image could not take over; "+
				"its reason is on its stderr (journalctl --user -u broker) and in the event log", before.BrokerPID)
		}
		select {
		case <-ctx.Done():
			return fail("--timeout %s fired before the new image reported ready (broker pid %d; see its log)", *timeout, before.BrokerPID)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func fetchUpgradeStatus(ctx context.Context, socket string) (*upgradeStatus, error) {
	reply, err := adminExchange(ctx, socket, &wirepb.AdminRequest{Verb: wirepb.AdminVerb_STATUS, Json: true}, 5*time.Second)
	if err != nil {
		return nil, err
	}
	var st upgradeStatus
	if err := json.Unmarshal([]byte(reply.Body), &st); err != nil {
		return nil, fmt.Errorf("%s: not a broker's status answer: %w", socket, err)
	}
	if st.BrokerPID <= 0 {
		return nil, fmt.Errorf("%s: the status answer names no broker pid", socket)
	}
	return &st, nil
}

// processGone reports whether pid has exited: no such process, or a zombie its parent has
// not reaped yet.
func processGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
