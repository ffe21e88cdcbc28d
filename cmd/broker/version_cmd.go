package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/rpbroker/broker/wire"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise the module
// build info is used.
var version = ""

// versionInfo is what `broker version --json` prints.
type versionInfo struct {
	Version         string `json:"version"`
	Protocol        string `json:"protocol"`
	ProtocolVersion int    `json:"protocol_version"`
	FramingVersion  int    `json:"framing_version"`
	EnvelopeVersion int    `json:"envelope_version"`
	GoVersion       string `json:"go_version"`
	VCSRevision     string `json:"vcs_revision,omitempty"`
	VCSTime         string `json:"vcs_time,omitempty"`
	VCSModified     *bool  `json:"vcs_modified,omitempty"`
}

func currentVersion() versionInfo {
	v := versionInfo{
		Version:         version,
		Protocol:        fmt.Sprintf("running-process broker v%d", wire.ProtocolVersion),
		ProtocolVersion: wire.ProtocolVersion,
		FramingVersion:  int(wire.FramingVersion),
		EnvelopeVersion: wire.ProtocolVersion,
		GoVersion:       runtime.Version(),
	}
	bi, ok := debug.ReadBuildInfo()
	if v.Version == "" {
		v.Version = "devel"
		if ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
	}
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.VCSRevision = s.Value
		case "vcs.time":
			v.VCSTime = s.Value
		case "vcs.modified":
			m := s.Value == "true"
			v.VCSModified = &m
		}
	}
	return v
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON document (version, protocol, framing, Go version, VCS revision)")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, "version", "[--json]", "unexpected argument %q", pos[0])
	}
	v := currentVersion()
	if *asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	fmt.Fprintf(stdout, "broker %s\nprotocol: %s\nframing version: %d\nenvelope version: %d\ngo: %s\n",
		v.Version, v.Protocol, v.FramingVersion, v.EnvelopeVersion, v.GoVersion)
	if v.VCSRevision != "" {
		dirty := ""
		if v.VCSModified != nil && *v.VCSModified {
			dirty = " (modified)"
		}
		fmt.Fprintf(stdout, "revision: %s%s\n", v.VCSRevision, dirty)
	}
	return exitOK
}
