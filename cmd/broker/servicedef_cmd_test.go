package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/servicedef"
	"github.com/rpbroker/broker/wire/wirepb"
)

func sd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runServicedef(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const zcTOML = `service_name = "zc"
binary_path = "/usr/bin/zc"
isolation = "shared"
min_version = "1.2.0"
version_allow_list = ["1.2.0", "1.3.0-rc.1"]

[labels]
team = "build"
`

func zcWant() *wirepb.ServiceDefinition {
	return &wirepb.ServiceDefinition{
		ServiceName: "zc", BinaryPath: "/usr/bin/zc", Isolation: wirepb.BrokerIsolation_SHARED_BROKER,
		MinVersion: "1.2.0", VersionAllowList: []string{"1.2.0", "1.3.0-rc.1"}, Labels: map[string]string{"team": "build"},
	}
}

// handBuilt is zcWant encoded with protowire from the field numbers of wire/wirepb/broker.proto alone, the
// way any protobuf implementation working from the schema would lay it out.
func handBuilt() []byte {
	var b []byte
	str := func(n protowire.Number, s string) {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	str(1, "zc")
	str(2, "/usr/bin/zc")
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	str(6, "1.2.0")
	str(7, "1.2.0")
	str(7, "1.3.0-rc.1")
	var kv []byte
	kv = protowire.AppendTag(kv, 1, protowire.BytesType)
	kv = protowire.AppendString(kv, "team")
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendString(kv, "build")
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	return protowire.AppendBytes(b, kv)
}

func TestServicedefUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{nil, exitUsage, "usage: broker servicedef SUBCOMMAND"},
		{[]string{"--help"}, exitOK, "subcommands:"},
		{[]string{"frob"}, exitUsage, `unknown subcommand "frob"`},
		{[]string{"encode", "--help"}, exitOK, "usage: broker servicedef encode IN.toml -o OUT.servicedef"},
		{[]string{"decode", "-h"}, exitOK, "-json"},
		{[]string{"validate", "--help"}, exitOK, "usage: broker servicedef validate FILE..."},
		{[]string{"install", "--help"}, exitOK, "-binary-path"},
		{[]string{"encode", "in.toml"}, exitUsage, "want one IN.toml and -o OUT.servicedef"},
		{[]string{"encode", "in.toml", "-o", "out.bin"}, exitUsage, "only reads files named <service_name>.servicedef"},
		{[]string{"encode", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"decode"}, exitUsage, "want exactly one FILE"},
		{[]string{"validate"}, exitUsage, "want at least one FILE"},
		{[]string{"install", "--binary-path", "/bin/x"}, exitUsage, "--service is required"},
		{[]string{"install", "--service", "x"}, exitUsage, "--binary-path is required"},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "--isolation", "public"}, exitUsage, `--isolation: isolation "public" is not one of private, shared, explicit`},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "--label", "novalue"}, exitUsage, "want key=value"},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "--label", "a=1", "--label", "a=2"}, exitUsage, `label "a" given twice`},
		{[]string{"install", "--service", "x", "--binary-path", "bin/x"}, exitUsage, `servicedef x.servicedef: binary_path "bin/x" is not absolute`},
		{[]string{"install", "--service", "X", "--binary-path", "/bin/x"}, exitUsage, `service_name "X" is not a valid service name`},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "--isolation", "explicit"}, exitUsage, "explicit_instance is empty"},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "--min-version", "v1"}, exitUsage, `min_version "v1"`},
		{[]string{"install", "--service", "x", "--binary-path", "/bin/x", "stray"}, exitUsage, `unexpected argument "stray"`},
	}
	for _, tc := range tests {
		code, out, errs := sd(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errs, tc.out) {
			t.Errorf("%q: exit %d, want %d; output lacks %q:\n%s%s", tc.args, code, tc.code, tc.out, out, errs)
		}
	}
}

func TestServicedefEncode(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, filepath.Join(dir, "zc.toml"), zcTOML)
	out := filepath.Join(dir, "zc.servicedef")
	code, stdout, stderr := sd(t, "encode", in, "-o", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "wrote "+out) {
		t.Errorf("stdout %q", stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Interop: our bytes are exactly what protowire lays out from the schema, and they
	// decode with the generated types.
	if !bytes.Equal(b, handBuilt()) {
		t.Fatalf("encoded\n% X\nwant\n% X", b, handBuilt())
	}
	var got wirepb.ServiceDefinition
	if err := proto.Unmarshal(b, &got); err != nil || !proto.Equal(&got, zcWant()) {
		t.Fatalf("decoded %v %v", &got, err)
	}
}

func TestServicedefEncodeErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, toml, out string
		want            []string
	}{
		{"unknown key", "service_name = \"zc\"\nbinary_pth = \"/x\"\n", "zc.servicedef", []string{"bad.toml", `unknown key "binary_pth"`}},
		{"wrong type", "service_name = \"zc\"\nbinary_path = 1\n", "zc.servicedef", []string{"bad.toml", `key "binary_path": want a string`}},
		{"relative binary", "service_name = \"zc\"\nbinary_path = \"zc\"\n", "zc.servicedef", []string{"bad.toml", `binary_path "zc" is not absolute`}},
		{"name vs output", "service_name = \"zc\"\nbinary_path = \"/zc\"\n", "other.servicedef", []string{`service_name "zc" does not match the file name "other.servicedef"`}},
		{"bad isolation", "service_name = \"zc\"\nbinary_path = \"/zc\"\nisolation = \"solo\"\n", "zc.servicedef", []string{"bad.toml", `isolation "solo"`}},
		{"syntax", "service_name = \"zc\n", "zc.servicedef", []string{"bad.toml:1:"}},
	}
	for _, tc := range tests {
		in := writeFile(t, filepath.Join(dir, "bad.toml"), tc.toml)
		out := filepath.Join(dir, tc.out)
		code, _, stderr := sd(t, "encode", in, "-o", out)
		if code != exitFailure {
			t.Errorf("%s: exit %d, want 1", tc.name, code)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr %q lacks %q", tc.name, stderr, w)
			}
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: output written despite the error", tc.name)
		}
	}
	if code, _, stderr := sd(t, "encode", filepath.Join(dir, "missing.toml"), "-o", filepath.Join(dir, "zc.servicedef")); code != exitFailure || !strings.Contains(stderr, "missing.toml") {
		t.Errorf("missing input: %d %s", code, stderr)
	}
}

func TestServicedefDecode(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "zc.servicedef")
	if err := os.WriteFile(file, handBuilt(), 0o600); err != nil { // written by "another implementation"
		t.Fatal(err)
	}
	code, tomlOut, stderr := sd(t, "decode", file)
	if code != exitOK {
		t.Fatalf("decode: %d %s", code, stderr)
	}
	for _, w := range []string{"service_name = 'zc'", "isolation = 'shared'", "[labels]", "team = 'build'"} {
		if !strings.Contains(tomlOut, w) {
			t.Errorf("TOML output lacks %q:\n%s", w, tomlOut)
		}
	}
	// decode output is encode input, byte for byte back to the same file.
	back := writeFile(t, filepath.Join(dir, "back.toml"), tomlOut)
	out2 := filepath.Join(t.TempDir(), "zc.servicedef")
	if code, _, stderr := sd(t, "encode", back, "-o", out2); code != exitOK {
		t.Fatalf("re-encode: %s", stderr)
	}
	if b, _ := os.ReadFile(out2); !bytes.Equal(b, handBuilt()) {
		t.Fatalf("decode|encode changed the bytes: % X", b)
	}

	code, jsonOut, _ := sd(t, "decode", "--json", file)
	var m map[string]any
	if code != exitOK || json.Unmarshal([]byte(jsonOut), &m) != nil || m["service_name"] != "zc" || m["isolation"] != "shared" {
		t.Fatalf("JSON: %d %s", code, jsonOut)
	}

	// A broken file is shown and reported.
	bad := filepath.Join(dir, "other.servicedef")
	if err := os.WriteFile(bad, handBuilt(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := sd(t, "decode", bad)
	if code != exitFailure || !strings.Contains(out, "service_name = 'zc'") || !strings.Contains(stderr, `servicedef `+bad+`: service_name "zc" does not match`) {
		t.Fatalf("broken file: %d\n%s\n%s", code, out, stderr)
	}
	garbage := writeFile(t, filepath.Join(dir, "g.servicedef"), "\xff\xff\xff")
	if code, _, stderr := sd(t, "decode", garbage); code != exitFailure || !strings.Contains(stderr, "not a protobuf ServiceDefinition") {
		t.Fatalf("garbage: %d %s", code, stderr)
	}
}

func TestServicedefValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "zc.servicedef")
	if err := os.WriteFile(good, handBuilt(), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "zc2.servicedef")
	d := zcWant()
	d.ServiceName, d.PerVersionBinaryDir = "zc2", "rel"
	b, _ := servicedef.Encode(d)
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.servicedef")

	code, out, _ := sd(t, "validate", good)
	if code != exitOK || !strings.Contains(out, "ok: "+good+" (service zc, instance shared") {
		t.Fatalf("good: %d %s", code, out)
	}
	code, out, _ = sd(t, "validate", good, bad, missing)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitFailure || len(lines) != 3 ||
		!strings.HasPrefix(lines[0], "ok: "+good) ||
		lines[1] != `error: servicedef `+bad+`: per_version_binary_dir "rel" is not absolute` ||
		!strings.Contains(lines[2], "error: servicedef "+missing) {
		t.Fatalf("mixed: %d\n%s", code, out)
	}
}

func TestServicedefInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf", "services")
	code, out, stderr := sd(t, "install", "--service", "zc", "--binary-path", "/usr/bin/zc", "--isolation", "shared",
		"--min-version", "1.2.0", "--allow", "1.2.0", "--allow", "1.3.0-rc.1", "--label", "team=build", "--dir", dir)
	path := filepath.Join(dir, "zc.servicedef")
	if code != exitOK || strings.TrimSpace(out) != "installed "+path {
		t.Fatalf("install: %d %s %s", code, out, stderr)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, handBuilt()) {
		t.Fatalf("installed bytes % X", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("leftover temp files: %v", entries)
	}

	// Default directory: RUNNING_PROCESS_SERVICE_DEF_DIR.
	envDir := filepath.Join(t.TempDir(), "env-services")
	t.Setenv(servicedef.EnvDir, envDir)
	if code, _, stderr := sd(t, "install", "--service", "ex", "--binary-path", "/bin/ex", "--isolation", "explicit", "--instance", "ci"); code != exitOK {
		t.Fatalf("install to env dir: %s", stderr)
	}
	def, err := servicedef.Load(filepath.Join(envDir, "ex.servicedef"))
	if err != nil || def.GetExplicitInstance() != "ci" {
		t.Fatalf("env dir: %v %v", def, err)
	}

	// An insecure directory is refused with the fix.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = sd(t, "install", "--service", "zc", "--binary-path", "/usr/bin/zc", "--dir", dir)
	if code != exitFailure || !strings.Contains(stderr, "chmod 700 "+dir) {
		t.Fatalf("insecure dir: %d %s", code, stderr)
	}
}
