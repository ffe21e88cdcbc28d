package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/config"
	"github.com/rpbroker/broker/supervisor"
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Registered before the slow start-up so that no SIGHUP is lost or kills us.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fs := newFlagSet("run", "-c FILE", stderr)
	cfgPath := fs.String("c", "", "path to broker.toml (required)")
	fs.StringVar(cfgPath, "config", "", "same as -c")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "broker run: -c FILE is required (try: broker -c broker.toml.example)")
		return exitUsage
	}
	load := func() (*config.Config, error) { return loadConfig(*cfgPath) }
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "broker: %v\n", err)
		return exitFailure
	}
	live := newLiveLog(stderr, cfg.Broker.LogFormat, cfg.Broker.LogLevel)
	log := live.logger()
	if os.Geteuid() == 0 {
		log.Warn().Msg("running as root: launched backends run as root too; peers must also be root to connect")
	}
	sup, err := supervisor.New(supervisor.Options{Load: load, Log: log, Inherited: inheritedListeners(cfg, log),
		OnBrokerChange: func(old, new config.Broker) {
			if old.LogFormat == new.LogFormat && old.LogLevel == new.LogLevel {
				return
			}
			format, level := live.set(new.LogFormat, new.LogLevel)
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

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
