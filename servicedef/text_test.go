package servicedef

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

func TestParseTOML(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *wirepb.ServiceDefinition
		err  []string
	}{
		{"minimal", "service_name = \"zc\"\nbinary_path = \"/usr/bin/zc\"\n", goodDef("zc"), nil},
		{"everything", `
service_name = "zc"
binary_path = "/bin/zc"
isolation = "explicit"
explicit_instance = "ci"
per_version_binary_dir = "/opt/zc"
min_version = "1.0.0"
version_allow_list = ["1.0.0", "1.1.0"]
[labels]
b = "2"
a = "1"
`, fullDef(), nil},
		{"shared", "service_name = \"zc\"\nbinary_path = \"/bin/zc\"\nisolation = \"shared\"\n",
			&wirepb.ServiceDefinition{ServiceName: "zc", BinaryPath: "/bin/zc", Isolation: wirepb.BrokerIsolation_SHARED_BROKER}, nil},
		{"unknown key", "service_name = \"zc\"\nbinray_path = \"/bin/zc\"\n", nil,
			[]string{"in.toml: ", `unknown key "binray_path"`, "known keys: service_name"}},
		{"unknown nested key", "service_name = \"zc\"\n[extra]\nx = 1\n", nil, []string{"in.toml:", `unknown key "extra`}},
		{"bad isolation", "service_name = \"zc\"\nisolation = \"PRIVATE\"\n", nil,
			[]string{"in.toml: ", `isolation "PRIVATE" is not one of private, shared, explicit`}},
		{"wrong type", "service_name = 5\n", nil, []string{"in.toml: ", `key "service_name": want a string, got an integer`}},
		{"label not a string", "service_name = \"zc\"\n[labels]\nx = 1\n", nil, []string{"in.toml: ", `key "labels.x": want a string, got an integer`}},
		{"allow list not strings", "version_allow_list = [\"1.0.0\", 2]\n", nil, []string{`key "version_allow_list[1]": want a string, got an integer`}},
		{"allow list scalar", "version_allow_list = \"1.0.0\"\n", nil, []string{`key "version_allow_list": want an array of strings, got a string`}},
		{"labels scalar", "labels = \"x\"\n", nil, []string{`key "labels": want a table of strings, got a string`}},
		{"syntax", "service_name = \n", nil, []string{"in.toml:1:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTOML("in.toml", []byte(tc.in))
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, tc.want) {
					t.Fatalf("got %v want %v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error %q", tc.err)
			}
			for _, w := range tc.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestTextRoundTrip(t *testing.T) {
	for _, d := range []*wirepb.ServiceDefinition{goodDef("zc"), fullDef()} {
		b, err := FormatTOML(d)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseTOML("x.toml", b)
		if err != nil {
			t.Fatalf("%s\n%v", b, err)
		}
		if !proto.Equal(back, d) {
			t.Fatalf("TOML round trip\n%s\ngot %v want %v", b, back, d)
		}
		j, err := FormatJSON(d)
		if err != nil {
			t.Fatal(err)
		}
		var txt Text
		if err := json.Unmarshal(j, &txt); err != nil {
			t.Fatal(err)
		}
		if back, err := txt.Proto(); err != nil || !proto.Equal(back, d) {
			t.Fatalf("JSON round trip\n%s\ngot %v %v", j, back, err)
		}
	}
	if w := IsolationWord(9); w != "unknown(9)" {
		t.Fatalf("IsolationWord(9) = %s", w)
	}
}

func TestInstallAndWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "services")
	p, err := Install(dir, fullDef())
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "zc.servicedef") {
		t.Fatalf("path %s", p)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v %v", fi.Mode(), err)
	}
	got, err := Load(p)
	if err != nil || !proto.Equal(got, fullDef()) {
		t.Fatalf("Load: %v %v", got, err)
	}
	b, _ := os.ReadFile(p)
	if !bytes.Equal(b, fullDefBytes) {
		t.Fatalf("installed bytes % X", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}

	bad := goodDef("zc")
	bad.BinaryPath = "zc"
	if _, err := Install(dir, bad); err == nil || !strings.Contains(err.Error(), "binary_path") {
		t.Fatalf("invalid def installed: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(dir, goodDef("zc")); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("insecure dir accepted: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.servicedef")); !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing: %v", err)
	}
}
