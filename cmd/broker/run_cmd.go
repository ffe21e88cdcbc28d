package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/internal/osthread"
	"github.com/rpbroker/broker/supervisor"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Registered before the slow start-up so that no SIGHUP is lost or kills us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1) // upgrade in place
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
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
	if err != nil && upgrading() {
		fmt.Fprintln(stderr, upgradeExitReason(err)) // the event log is named by the file that failed
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "broker: %v\n", err)
		return exitFailure
	}
	live := newLiveLog(stderr, cfg.Broker.LogFormat, levelOf(cfg.Broker))
	log := live.logger()
	if os.Geteuid() == 0 {
		log.Warn().Msg("running as root: launched backends run as root too; peers must also be root to connect")
	}
	// After an upgrade in place: the state and listeners the previous image handed over.
	restored, kept, err := restoreUpgrade(log)
	upgradeFailed := func(err error) int {
		fmt.Fprintln(stderr, upgradeExitReason(err))
		supervisor.RecordUpgradeFailure(cfg, err)
		return exitFailure
	}
	if err != nil {
		return upgradeFailed(err)
	}
	inherited := inheritedListeners(cfg, log)
	if inherited == nil {
		inherited = map[string]*net.UnixListener{}
	}
	maps.Copy(inherited, kept)
	sup, err := supervisor.New(supervisor.Options{Load: load, Log: log, Inherited: inherited, Version: currentVersion().Version,
		Thread: osthread.FromContext(ctx), Restore: restored,
		OnBrokerChange: func(old, new config.Broker) {
			if old.LogFormat == new.LogFormat && levelOf(old) == levelOf(new) {
				return
			}
			format, level := live.set(new.LogFormat, levelOf(new))
			log.Info().Str("event", "config_reload").Str("log_format", format).Str("log_level", level.String()).Msg("logger swapped")
		}})
	if err != nil && restored != nil {
		return upgradeFailed(err)
	}
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
		case <-usr2:
			log.Info().Str("event", "sigusr2").Msg("upgrading in place")
			uctx, cancel := context.WithTimeout(ctx, time.Minute)
			sup.Upgrade(uctx, "") // a refusal is logged and recorded by the supervisor
			cancel()
		case err := <-done:
			if err != nil && restored != nil {
				var se *supervisor.StartError
				if errors.As(err, &se) {
					return upgradeFailed(err)
				}
			}
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
