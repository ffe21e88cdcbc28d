package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rpbroker/broker/supervisor/admin"
	"github.com/rpbroker/broker/supervisor/events"
	"github.com/rpbroker/broker/wire/wirepb"
)

const eventsUsage = "[-f] [--json] [-c FILE | --log PATH]\n\n" +
	"Prints the broker's lifecycle event log (broker.event_log, and its rotated files), one\n" +
	"line per event: local time with milliseconds, kind, service, version, pid, reason.\n" +
	"With -f it keeps printing events as they are written, across rotations, until interrupted."

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("events", eventsUsage, stderr)
	followLog := fs.Bool("f", false, "follow: print new events as they are written")
	asJSON := fs.Bool("json", false, "one JSON object per line (the keys of admin dump's recent_lifecycle_events)")
	cfgPath := fs.String("c", "", "broker.toml whose event_log to read")
	logPath := fs.String("log", "", "the event log file")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "broker events: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	path, code := eventLogPath(*cfgPath, *logPath, stderr)
	if code != 0 {
		return code
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var werr error
	emit := func(m *wirepb.LifecycleEvent) {
		e := admin.EventOf(m)
		if *asJSON {
			b, _ := json.Marshal(e)
			_, werr = fmt.Fprintf(w, "%s\n", b)
		} else {
			_, werr = fmt.Fprintln(w, e.Line(time.Local))
		}
	}
	if !*followLog {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "broker events: no event log at %s (has a broker run with it?)\n", path)
			return exitFailure
		}
		evs, err := events.ReadAll(path)
		for _, m := range evs {
			emit(m)
		}
		if err != nil {
			w.Flush()
			fmt.Fprintf(stderr, "broker events: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	// Following: each event is flushed as it comes, and a reader that went away (| head)
	// ends the command.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := events.Follow(ctx, path, 100*time.Millisecond, func(m *wirepb.LifecycleEvent) {
		if emit(m); werr == nil {
			werr = w.Flush()
		}
		if werr != nil {
			cancel()
		}
	})
	if err != nil {
		w.Flush()
		fmt.Fprintf(stderr, "broker events: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// eventLogPath is --log, or the event_log of -c FILE.
func eventLogPath(cfgPath, logPath string, stderr io.Writer) (string, int) {
	switch {
	case cfgPath != "" && logPath != "":
		fmt.Fprintln(stderr, "broker events: give --log or -c, not both")
		return "", exitUsage
	case logPath != "":
		return logPath, 0
	case cfgPath == "":
		fmt.Fprintln(stderr, "broker events: -c FILE or --log PATH is required")
		return "", exitUsage
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "broker events: %v\n", err)
		return "", exitFailure
	}
	if cfg.Broker.EventLog == "" {
		fmt.Fprintf(stderr, "broker events: %s sets no broker.event_log (and no runtime_dir to default it in)\n", cfgPath)
		return "", exitFailure
	}
	return cfg.Broker.EventLog, 0
}
