package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

const servicedefHelp = `TOML keys: service_name, binary_path, isolation = "private"|"shared"|"explicit",
explicit_instance, per_version_binary_dir, min_version, version_allow_list = [...], [labels].`

// servicedefCommand is the servicedef group of the command table.
func servicedefCommand() command {
	return command{name: "servicedef", summary: "encode, decode, validate and install .servicedef files", help: servicedefHelp,
		sub: func() []command {
			return []command{
				{name: "encode", summary: "write the protobuf file described by a TOML file (IN.toml -o OUT.servicedef)", maxArgs: 1,
					run: func(_ context.Context, args []string, stdout, stderr io.Writer) int {
						return servicedefEncode(args, stdout, stderr)
					}},
				{name: "decode", summary: "print a .servicedef as TOML (encode reads it back) or JSON", maxArgs: 1,
					run: func(_ context.Context, args []string, stdout, stderr io.Writer) int {
						return servicedefDecode(args, stdout, stderr)
					}},
				{name: "validate", summary: "check files; exit 1 if any is invalid", maxArgs: -1,
					run: func(_ context.Context, args []string, stdout, stderr io.Writer) int {
						return servicedefValidate(args, stdout, stderr)
					}},
				{name: "install", summary: "write <dir>/NAME.servicedef atomically (live at once)",
					run: func(_ context.Context, args []string, stdout, stderr io.Writer) int {
						return servicedefInstall(args, stdout, stderr)
					}},
			}
		}}
}

func runServicedef(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := servicedefCommand()
	return runCommand(ctx, &c, c.name, args, stdout, stderr)
}

func servicedefEncode(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("servicedef encode", "IN.toml -o OUT.servicedef", stderr)
	out := fs.String("o", "", "output `file`, named <service_name>.servicedef (required)")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || *out == "" {
		fmt.Fprintln(stderr, "broker servicedef encode: want one IN.toml and -o OUT.servicedef")
		return exitUsage
	}
	if !strings.HasSuffix(*out, servicedef.Ext) {
		fmt.Fprintf(stderr, "broker servicedef encode: -o %s: the broker only reads files named <service_name>%s\n", *out, servicedef.Ext)
		return exitUsage
	}
	in := pos[0]
	src, err := os.ReadFile(in)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef encode: %v\n", err)
		return exitFailure
	}
	def, err := servicedef.ParseTOML(in, src)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef encode: %v\n", err)
		return exitFailure
	}
	if err := servicedef.Validate(def, servicedef.Stem(*out)); err != nil {
		fmt.Fprintf(stderr, "broker servicedef encode: %s: %v\n", in, err)
		return exitFailure
	}
	b, err := servicedef.Encode(def)
	if err == nil {
		err = servicedef.WriteAtomic(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef encode: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "wrote %s (service %s, %d bytes)\n", *out, def.GetServiceName(), len(b))
	return exitOK
}

func servicedefDecode(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("servicedef decode", "FILE [--json]", stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of TOML")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "broker servicedef decode: want exactly one FILE")
		return exitUsage
	}
	path := pos[0]
	b, err := servicedef.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef decode: servicedef %s: %v\n", path, err)
		return exitFailure
	}
	def, err := servicedef.DecodeUnchecked(path, b)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef decode: %v\n", err)
		return exitFailure
	}
	format := servicedef.FormatTOML
	if *asJSON {
		format = servicedef.FormatJSON
	}
	text, err := format(def)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef decode: %s: %v\n", path, err)
		return exitFailure
	}
	stdout.Write(text)
	if n := len(def.ProtoReflect().GetUnknown()); n > 0 {
		fmt.Fprintf(stderr, "broker servicedef decode: %s: note: %d bytes of fields unknown to this schema are not shown\n", path, n)
	}
	// A broken file is still shown, since that is when one wants to see it.
	if _, err := servicedef.Decode(path, b); err != nil {
		fmt.Fprintf(stderr, "broker servicedef decode: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func servicedefValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("servicedef validate", "FILE...", stderr)
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "broker servicedef validate: want at least one FILE")
		return exitUsage
	}
	rc := exitOK
	for _, path := range pos {
		def, err := servicedef.Load(path)
		if err != nil {
			fmt.Fprintf(stdout, "error: %v\n", err)
			rc = exitFailure
			continue
		}
		inst, _ := servicedef.InstanceID(def)
		fmt.Fprintf(stdout, "ok: %s (service %s, instance %s, binary %s)\n", path, def.GetServiceName(), inst, def.GetBinaryPath())
	}
	return rc
}

func servicedefInstall(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("servicedef install", "--service NAME --binary-path PATH [flags]", stderr)
	service := fs.String("service", "", "service `name` (required); the file is <dir>/NAME.servicedef")
	binary := fs.String("binary-path", "", "absolute `path` of the backend binary (required)")
	isolation := fs.String("isolation", "private", "private, shared or explicit")
	instance := fs.String("instance", "", "explicit instance `name` (with --isolation explicit)")
	perVersion := fs.String("per-version-binary-dir", "", "absolute `dir` that launched binaries must lie under")
	minVersion := fs.String("min-version", "", "lowest `version` served")
	var allow listFlag
	fs.Var(&allow, "allow", "allowed `version` (repeatable); when given, only these are served")
	labels := labelFlag{}
	fs.Var(labels, "label", "`key=value` label (repeatable)")
	dir := fs.String("dir", "", "service definition `dir` (default: $"+servicedef.EnvDir+", else the v1 config dir)")
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "broker servicedef install: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case len(pos) > 0:
		return usageErr("unexpected argument %q", pos[0])
	case *service == "":
		return usageErr("--service is required")
	case *binary == "":
		return usageErr("--binary-path is required")
	}
	iso, err := servicedef.ParseIsolation(*isolation)
	if err != nil {
		return usageErr("--isolation: %v", err)
	}
	def := &wirepb.ServiceDefinition{
		ServiceName:         *service,
		BinaryPath:          *binary,
		Isolation:           iso,
		ExplicitInstance:    *instance,
		PerVersionBinaryDir: *perVersion,
		MinVersion:          *minVersion,
		VersionAllowList:    allow,
	}
	if len(labels) > 0 {
		def.Labels = labels
	}
	if err := servicedef.Validate(def, ""); err != nil {
		return usageErr("%v", err)
	}
	if *dir == "" {
		home, _ := os.UserHomeDir()
		*dir = servicedef.DefaultDir(os.Getenv, home)
	}
	path, err := servicedef.Install(*dir, def)
	if err != nil {
		fmt.Fprintf(stderr, "broker servicedef install: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "installed %s\n", path)
	return exitOK
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// labelFlag collects repeatable key=value flags.
type labelFlag map[string]string

func (m labelFlag) String() string { return "" }
func (m labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	switch {
	case !ok || k == "":
		return errors.New("want key=value")
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("label %q given twice", k)
	}
	m[k] = val
	return nil
}
