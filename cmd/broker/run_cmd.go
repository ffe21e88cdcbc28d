package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Registered before the slow start-up so that no SIGHUP is lost or kills us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	defer ignoreSIGPIPE()()

	fs := newFlagSet("run", "-c FILE [--log-level LEVEL]", stderr)
	cfgPath := fs.String("c", "", "path to broker.toml (required)")
	fs.StringVar(cfgPath, "config", "", "same as -c")
	flagLevel := fs.String("log-level", "", "trace, debug, info, warn or error; wins over BROKER_LOG_LEVEL,\n"+
		"which wins over log_level in the file (default info); a reload keeps it")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "broker run: -c FILE is required (try: broker -c broker.toml.example)")
		return exitUsage
	}
	if *flagLevel != "" {
		if _, err := zerolog.ParseLevel(*flagLevel); err != nil || *flagLevel == "disabled" || *flagLevel == "panic" || *flagLevel == "fatal" {
			fmt.Fprintf(stderr, "broker run: --log-level %q is not one of trace, debug, info, warn, error\n", *flagLevel)
			return exitUsage
		}
	}
	// levelOf is the level in force for a config: the flag, when given, beats the config
	// (which already folds BROKER_LOG_LEVEL over the file).
	levelOf := func(b config.Broker) string {
		if *flagLevel != "" {
			return *flagLevel
		}
		return b.LogLevel
	}
	load := func() (*config.Config, error) { return loadConfig(*cfgPath) }
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "broker: %v\n", err)
		return exitFailure
	}
	live := newLiveLog(stderr, cfg.Broker.LogFormat, levelOf(cfg.Broker))
	log := live.logger()
	if os.Geteuid() == 0 {
		log.Warn().Msg("running as root: launched backends run as root too; peers must also be root to connect")
	}
	sup, err := supervisor.New(supervisor.Options{Load: load, Log: log, Inherited: inheritedListeners(cfg, log), Version: currentVersion().Version,
		OnBrokerChange: func(old, new config.Broker) {
			if old.LogFormat == new.LogFormat && levelOf(old) == levelOf(new) {
				return
			}
			format, level := live.set(new.LogFormat, levelOf(new))
			log.Info().Str("event", "config_reload").Str("log_format", format).Str("log_level", level.String()).Msg("logger swapped")
		}})
	if err != nil {
		log.Error().Err(err).Msg("start")
		return exitFailure
	}
	done := make(chan error, 1)
	go func() { done <- sup.Run(ctx) }()
	for {
		select {
		case <-hup:
			log.Info().Str("event", "sighup").Msg("reloading config")
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			sup.Reload(rctx)
			cancel()
		case err := <-done:
			if err != nil {
				log.Error().Err(err).Msg("broker stopped with an error")
				return exitFailure
			}
			return exitOK
		}
	}
}

// ignoreSIGPIPE keeps a closed stdout or stderr (`broker -c FILE 2>&1 | head -1`) from
// killing the broker with its sockets left behind: with SIGPIPE notified, a write to a
// broken pipe fails with EPIPE instead, and the log line is lost, not the broker. Notify
// rather than Ignore, because an ignored signal stays ignored in launched backends.
// Nothing reads the channel: a signal that finds it full is dropped. It returns the stop.
func ignoreSIGPIPE() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGPIPE)
	return func() { signal.Stop(ch) }
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
