package servicedef

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

func goodDef(svc string) *wirepb.ServiceDefinition {
	return &wirepb.ServiceDefinition{ServiceName: svc, BinaryPath: "/usr/bin/" + svc}
}

func TestValidate(t *testing.T) {
	const file = "/x/zc.servicedef"
	tests := []struct {
		name   string
		mutate func(d *wirepb.ServiceDefinition)
		want   []string // substrings of the error; nil = valid
	}{
		{"minimal private", func(d *wirepb.ServiceDefinition) {}, nil},
		{"shared", func(d *wirepb.ServiceDefinition) { d.Isolation = wirepb.BrokerIsolation_SHARED_BROKER }, nil},
		{"explicit", func(d *wirepb.ServiceDefinition) {
			d.Isolation = wirepb.BrokerIsolation_EXPLICIT_INSTANCE
			d.ExplicitInstance = "ci-1"
		}, nil},
		{"all optional fields", func(d *wirepb.ServiceDefinition) {
			d.PerVersionBinaryDir = "/opt/zc"
			d.MinVersion = "1.2.3-rc.1"
			d.VersionAllowList = []string{"1.2.3", "2.0.0"}
			d.Labels = map[string]string{"team": "build"}
		}, nil},
		{"service name uppercase", func(d *wirepb.ServiceDefinition) { d.ServiceName = "ZC" },
			[]string{file + ": ", `service_name "ZC" is not a valid service name`}},
		{"service name empty", func(d *wirepb.ServiceDefinition) { d.ServiceName = "" },
			[]string{file + ": ", `service_name "" is not a valid service name`}},
		{"service name 65 chars", func(d *wirepb.ServiceDefinition) { d.ServiceName = strings.Repeat("a", 65) },
			[]string{`service_name "aaaa`, "not a valid service name"}},
		{"service name differs from stem", func(d *wirepb.ServiceDefinition) { d.ServiceName = "other" },
			[]string{file + ": ", `service_name "other" does not match the file name "zc.servicedef"`}},
		{"binary path empty", func(d *wirepb.ServiceDefinition) { d.BinaryPath = "" },
			[]string{file + ": ", "binary_path is empty"}},
		{"binary path relative", func(d *wirepb.ServiceDefinition) { d.BinaryPath = "bin/zc" },
			[]string{`servicedef /x/zc.servicedef: binary_path "bin/zc" is not absolute`}},
		{"per version dir relative", func(d *wirepb.ServiceDefinition) { d.PerVersionBinaryDir = "versions" },
			[]string{file + ": ", `per_version_binary_dir "versions" is not absolute`}},
		{"min version with v", func(d *wirepb.ServiceDefinition) { d.MinVersion = "v1.2.3" },
			[]string{file + ": ", `min_version "v1.2.3" is not a valid version`}},
		{"min version with build", func(d *wirepb.ServiceDefinition) { d.MinVersion = "1.2.3+b1" },
			[]string{`min_version "1.2.3+b1" is not a valid version`}},
		{"allow list entry bad", func(d *wirepb.ServiceDefinition) { d.VersionAllowList = []string{"1.0.0", "1.2"} },
			[]string{file + ": ", `version_allow_list[1] "1.2" is not a valid version`}},
		{"private with instance", func(d *wirepb.ServiceDefinition) { d.ExplicitInstance = "ci" },
			[]string{file + ": ", `explicit_instance "ci" must be empty when isolation is PRIVATE_BROKER`}},
		{"shared with instance", func(d *wirepb.ServiceDefinition) {
			d.Isolation = wirepb.BrokerIsolation_SHARED_BROKER
			d.ExplicitInstance = "ci"
		}, []string{`explicit_instance "ci" must be empty when isolation is SHARED_BROKER`}},
		{"explicit without instance", func(d *wirepb.ServiceDefinition) { d.Isolation = wirepb.BrokerIsolation_EXPLICIT_INSTANCE },
			[]string{file + ": ", "explicit_instance is empty but isolation is EXPLICIT_INSTANCE"}},
		{"explicit with bad instance", func(d *wirepb.ServiceDefinition) {
			d.Isolation = wirepb.BrokerIsolation_EXPLICIT_INSTANCE
			d.ExplicitInstance = "CI.1"
		}, []string{`explicit_instance "CI.1" is not a valid instance name`}},
		{"unknown isolation", func(d *wirepb.ServiceDefinition) { d.Isolation = 7 },
			[]string{file + ": ", "isolation 7 is not one of PRIVATE_BROKER (0), SHARED_BROKER (1), EXPLICIT_INSTANCE (2)"}},
		{"several problems at once", func(d *wirepb.ServiceDefinition) {
			d.BinaryPath = "zc"
			d.MinVersion = "1"
		}, []string{`binary_path "zc" is not absolute; min_version "1" is not a valid version`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := goodDef("zc")
			tc.mutate(d)
			b, err := Encode(d)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Decode(file, b)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got nil", tc.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.File != file {
				t.Fatalf("want *ValidationError for %s, got %T %v", file, err, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateWithoutStem(t *testing.T) {
	d := goodDef("zc")
	d.BinaryPath = "rel"
	err := Validate(d, "")
	if err == nil || !strings.Contains(err.Error(), `servicedef zc.servicedef: binary_path "rel"`) {
		t.Fatalf("got %v", err)
	}
	if err := Validate(goodDef("zc"), ""); err != nil {
		t.Fatal(err)
	}
	if err := Validate(goodDef("zc"), "other"); err == nil || !strings.Contains(err.Error(), "servicedef other.servicedef: service_name") {
		t.Fatalf("got %v", err)
	}
}

func TestDecodeGarbage(t *testing.T) {
	_, err := Decode("/d/zc.servicedef", []byte{0x0A, 0x05, 'z'}) // truncated string
	if err == nil || !strings.Contains(err.Error(), "servicedef /d/zc.servicedef: not a protobuf ServiceDefinition") {
		t.Fatalf("got %v", err)
	}
}

func fullDef() *wirepb.ServiceDefinition {
	return &wirepb.ServiceDefinition{
		ServiceName:         "zc",
		BinaryPath:          "/bin/zc",
		Isolation:           wirepb.BrokerIsolation_EXPLICIT_INSTANCE,
		ExplicitInstance:    "ci",
		PerVersionBinaryDir: "/opt/zc",
		MinVersion:          "1.0.0",
		VersionAllowList:    []string{"1.0.0", "1.1.0"},
		Labels:              map[string]string{"b": "2", "a": "1"},
	}
}

// fullDefBytes is fullDef encoded by hand from the v1 ServiceDefinition field numbers.
var fullDefBytes = []byte{
	0x0A, 0x02, 'z', 'c', // 1 service_name
	0x12, 0x07, '/', 'b', 'i', 'n', '/', 'z', 'c', // 2 binary_path
	0x18, 0x02, // 3 isolation EXPLICIT_INSTANCE
	0x22, 0x02, 'c', 'i', // 4 explicit_instance
	0x2A, 0x07, '/', 'o', 'p', 't', '/', 'z', 'c', // 5 per_version_binary_dir
	0x32, 0x05, '1', '.', '0', '.', '0', // 6 min_version
	0x3A, 0x05, '1', '.', '0', '.', '0', // 7 version_allow_list
	0x3A, 0x05, '1', '.', '1', '.', '0',
	0x42, 0x06, 0x0A, 0x01, 'a', 0x12, 0x01, '1', // 8 labels, keys sorted
	0x42, 0x06, 0x0A, 0x01, 'b', 0x12, 0x01, '2',
}

func TestEncodeByteVector(t *testing.T) {
	for range 5 { // deterministic: map order never leaks
		b, err := Encode(fullDef())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, fullDefBytes) {
			t.Fatalf("encoding\n got % X\nwant % X", b, fullDefBytes)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, d := range []*wirepb.ServiceDefinition{goodDef("a"), fullDef()} {
		b, err := Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode("/d/"+d.ServiceName+Ext, b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, d) {
			t.Fatalf("round trip: got %v want %v", got, d)
		}
		again, _ := Encode(got)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	}
}

// TestInteropHandBuilt builds a file with protowire (no generated code, as any other protobuf
// implementation would from the schema), decodes it with ours, then takes our encoding
// apart with protowire and checks every field number and value.
func TestInteropHandBuilt(t *testing.T) {
	var b []byte
	str := func(num protowire.Number, s string) {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	str(1, "build-cache")
	str(2, "/usr/local/bin/build-cache")
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 1) // SHARED_BROKER
	str(6, "2.0.0")
	str(7, "2.0.0")
	str(7, "2.1.0-rc.1")
	var kv []byte
	kv = protowire.AppendTag(kv, 1, protowire.BytesType)
	kv = protowire.AppendString(kv, "owner")
	kv = protowire.AppendTag(kv, 2, protowire.BytesType)
	kv = protowire.AppendString(kv, "ci")
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendBytes(b, kv)
	b = protowire.AppendTag(b, 99, protowire.VarintType) // unknown field: tolerated
	b = protowire.AppendVarint(b, 5)

	d, err := Decode("/d/build-cache.servicedef", b)
	if err != nil {
		t.Fatal(err)
	}
	want := &wirepb.ServiceDefinition{
		ServiceName: "build-cache", BinaryPath: "/usr/local/bin/build-cache",
		Isolation: wirepb.BrokerIsolation_SHARED_BROKER, MinVersion: "2.0.0",
		VersionAllowList: []string{"2.0.0", "2.1.0-rc.1"}, Labels: map[string]string{"owner": "ci"},
	}
	d.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(d, want) {
		t.Fatalf("decoded %v, want %v", d, want)
	}

	// And the other way: parse our bytes field by field.
	enc, err := Encode(fullDef())
	if err != nil {
		t.Fatal(err)
	}
	got := map[protowire.Number][]string{}
	var iso uint64
	for len(enc) > 0 {
		num, typ, n := protowire.ConsumeTag(enc)
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		enc = enc[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(enc)
			if num != 3 || n < 0 {
				t.Fatalf("varint field %d", num)
			}
			iso, enc = v, enc[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(enc)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			if num == 8 { // map entry: key 1, value 2
				k, _, kn := protowire.ConsumeTag(v)
				ks, ksn := protowire.ConsumeString(v[kn:])
				vt, _, vn := protowire.ConsumeTag(v[kn+ksn:])
				vs, _ := protowire.ConsumeString(v[kn+ksn+vn:])
				if k != 1 || vt != 2 {
					t.Fatalf("map entry fields %d %d", k, vt)
				}
				got[8] = append(got[8], ks+"="+vs)
			} else {
				got[num] = append(got[num], string(v))
			}
			enc = enc[n:]
		default:
			t.Fatalf("field %d: unexpected wire type %d", num, typ)
		}
	}
	wantFields := map[protowire.Number][]string{
		1: {"zc"}, 2: {"/bin/zc"}, 4: {"ci"}, 5: {"/opt/zc"}, 6: {"1.0.0"},
		7: {"1.0.0", "1.1.0"}, 8: {"a=1", "b=2"},
	}
	if iso != 2 {
		t.Errorf("isolation = %d, want 2", iso)
	}
	for num, w := range wantFields {
		if strings.Join(got[num], ",") != strings.Join(w, ",") {
			t.Errorf("field %d = %q, want %q", num, got[num], w)
		}
	}
}

func TestInstanceID(t *testing.T) {
	tests := []struct {
		iso     wirepb.BrokerIsolation
		inst    string
		want    string
		wantErr string
	}{
		{wirepb.BrokerIsolation_PRIVATE_BROKER, "", "private:zc", ""},
		{wirepb.BrokerIsolation_SHARED_BROKER, "", "shared", ""},
		{wirepb.BrokerIsolation_EXPLICIT_INSTANCE, "ci", "explicit:ci", ""},
		{wirepb.BrokerIsolation_EXPLICIT_INSTANCE, "", "", "explicit_instance"},
		{9, "", "", "unknown isolation 9"},
	}
	for _, tc := range tests {
		d := goodDef("zc")
		d.Isolation, d.ExplicitInstance = tc.iso, tc.inst
		got, err := InstanceID(d)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v %q: err %v, want %q", tc.iso, tc.inst, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v %q: got %q %v, want %q", tc.iso, tc.inst, got, err, tc.want)
		}
	}
}

func TestDefaultDir(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name   string
		getenv func(string) string
		want   string
	}{
		{"override wins", env(EnvDir, "/srv/defs", "XDG_CONFIG_HOME", "/x"), "/srv/defs"},
		{"empty override ignored", env(EnvDir, "", "XDG_CONFIG_HOME", "/x"), "/x/running-process/services"},
		{"xdg", env("XDG_CONFIG_HOME", "/x"), "/x/running-process/services"},
		{"home", env(), "/home/u/.config/running-process/services"},
	}
	for _, tc := range tests {
		if got := DefaultDir(tc.getenv, "/home/u"); got != tc.want {
			t.Errorf("%s: got %s want %s", tc.name, got, tc.want)
		}
	}
}

func TestCheckDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
		return p
	}
	private := mk("private", 0o700)
	open := mk("open", 0o755)
	group := mk("group", 0o710)
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir      string
		want     string
		insecure bool
	}{
		{private, "", false},
		{open, "mode 0755 lets group/others in (run: chmod 700 " + open + ")", true},
		{group, "chmod 700", true},
		{link, "is a symlink", true},
		{file, "is not a directory", true},
		{filepath.Join(base, "missing"), "does not exist (create it with: mkdir -m 700", false},
	}
	for _, tc := range tests {
		err := CheckDir(tc.dir)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.dir, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("%s: err %v, want %q", tc.dir, err, tc.want)
		}
		if errors.Is(err, ErrInsecureDir) != tc.insecure {
			t.Errorf("%s: errors.Is(ErrInsecureDir) = %v", tc.dir, !tc.insecure)
		}
	}
}
