package main

import (
	"net"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/rs/zerolog"

	"github.com/rpbroker/broker/config"
)

// inheritedListeners takes the listening sockets systemd (or systemd-socket-activate)
// passed with LISTEN_FDS, by socket path, for supervisor.Options.Inherited: a service
// whose socket is one of those paths serves on it instead of binding. go-systemd's
// activation package reads the fds and clears LISTEN_* so launched backends do not
// inherit them. The broker never unlinks a socket it did not create; a passed socket no
// service uses is logged and closed. Without LISTEN_FDS it returns nil.
func inheritedListeners(cfg *config.Config, log zerolog.Logger) map[string]*net.UnixListener {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil
	}
	want := make(map[string]bool, len(cfg.Services))
	for _, svc := range cfg.Services {
		want[filepath.Clean(svc.Socket)] = true
	}
	out := make(map[string]*net.UnixListener, len(files))
	for _, f := range files {
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own copy of the descriptor
		if err != nil {
			log.Warn().Err(err).Str("fd", f.Name()).Msg("passed descriptor is not a listening socket; closed")
			continue
		}
		ul, ok := ln.(*net.UnixListener)
		if !ok {
			log.Warn().Str("fd", f.Name()).Str("addr", ln.Addr().String()).Msg("passed socket is not a Unix socket; closed")
			ln.Close()
			continue
		}
		ul.SetUnlinkOnClose(false) // systemd's socket, not ours: it outlives the broker
		path := ul.Addr().String()
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		if !want[path] {
			log.Warn().Str("socket", path).Msg("passed socket matches no service's socket; closed")
			ul.Close()
			continue
		}
		log.Info().Str("socket", path).Msg("serving on a socket passed by systemd")
		out[path] = ul
	}
	return out
}
