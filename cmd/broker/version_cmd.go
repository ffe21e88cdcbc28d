package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/rpbroker/broker/wire"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise the module
// build info is used.
var version = ""

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", stderr)
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	fmt.Fprintf(stdout, "broker %s\nprotocol: running-process broker v%d\nframing version: %d\nenvelope version: %d\n",
		v, wire.ProtocolVersion, wire.FramingVersion, wire.ProtocolVersion)
	return exitOK
}
