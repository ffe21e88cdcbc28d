package names

import (
	"os"
	"strings"
	"testing"
)

func TestValidService(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"zccache", true},
		{"build-cache", true},
		{"a", true},
		{"0-9", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"Zccache", false},
		{"zc.cache", false},
		{"zc_cache", false},
		{"zc cache", false},
		{"zccaché", false},
		{"../x", false},
	} {
		if got := ValidService(tc.in); got != tc.want {
			t.Errorf("ValidService(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if got := ValidInstance(tc.in); got != tc.want {
			t.Errorf("ValidInstance(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"1.2.3", true},
		{"0.0.0", true},
		{"1.11.20", true},
		{"1.2.3-rc.1", true},
		{"1.2.3-alpha", true},
		{"1.2.3-0.a.b", true},
		{"1.2.3-" + strings.Repeat("a", 58), true},  // 64 bytes
		{"1.2.3-" + strings.Repeat("a", 59), false}, // 65 bytes
		{"v1.2.3", false},
		{"1.2.3+build", false},
		{"1.2.3-rc.1+build.5", false},
		{"1.2", false},
		{"1.2.3.4", false},
		{"1.2.3-RC1", false},
		{"1.2.3-", false},
		{"", false},
		{" 1.2.3", false},
		{"1.2.3\n", false},
	} {
		if got := ValidVersion(tc.in); got != tc.want {
			t.Errorf("ValidVersion(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if err := CheckVersion("v1.2.3"); err == nil || !strings.Contains(err.Error(), `"v1.2.3"`) {
		t.Errorf("CheckVersion error should name the input, got %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.3", 0},
		{"1.2.3", "1.2.4", -1},
		{"1.10.0", "1.9.9", 1},
		{"2.0.0", "10.0.0", -1},
		{"1.2.3-rc.1", "1.2.3", 0}, // pre-release ignored (v1)
		{"1.2.3-rc.1", "1.2.2", 1},
		{"007.0.0", "7.0.0", 0},
		{"99999999999999999999999.0.0", "1.0.0", 1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestUserHashAndLeaves(t *testing.T) {
	h := UserHash(1000, "0123456789abcdef0123456789abcdef")
	if len(h) != 16 || strings.ToLower(h) != h {
		t.Fatalf("UserHash = %q, want 16 lower-case hex", h)
	}
	if h == UserHash(1001, "0123456789abcdef0123456789abcdef") {
		t.Fatal("uid must change the hash")
	}
	l := Layout{Dir: "/run/user/1000/running-process/broker", SID: h}
	for leaf, want := range map[string]string{
		l.SharedLeaf():         "rpb-v1-" + h + "-shared",
		l.ServiceLeaf("zc"):    "rpb-v1-" + h + "-svc-zc",
		l.InstanceLeaf("team"): "rpb-v1-" + h + "-inst-team",
		l.BackendLeaf("ab"):    "rpb-v1-" + h + "-be-ab",
	} {
		if leaf != want {
			t.Errorf("leaf %q, want %q", leaf, want)
		}
	}
	p, err := l.Path(l.ServiceLeaf("zc"))
	if err != nil || p != l.Dir+"/rpb-v1-"+h+"-svc-zc.sock" {
		t.Fatalf("Path = %q, %v", p, err)
	}
	if _, err := l.Path(l.ServiceLeaf(strings.Repeat("x", 64))); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Fatalf("over-long path accepted: %v", err)
	}
}

func TestDefaultRuntimeDir(t *testing.T) {
	env := map[string]string{"XDG_RUNTIME_DIR": "/run/user/7"}
	if got := DefaultRuntimeDir(7, func(k string) string { return env[k] }); got != "/run/user/7/running-process/broker" {
		t.Errorf("with XDG: %q", got)
	}
	if got := DefaultRuntimeDir(7, func(string) string { return "" }); got != "/tmp/running-process-7/broker" {
		t.Errorf("without XDG: %q", got)
	}
}

func TestMachineIDSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	etc, dbus := write("machine-id", "abc123\n"), write("dbus-id", "dbus456\n")
	empty, boot := write("empty", "\n"), write("boot_id", "0b1a-boot\n")
	missing := dir + "/absent"
	for _, tc := range []struct {
		name    string
		files   []string
		boot    string
		want    string
		wantErr bool
	}{
		{"first file wins", []string{etc, dbus}, boot, "abc123", false},
		{"second when first missing", []string{missing, dbus}, boot, "dbus456", false},
		{"boot id when none exists", []string{missing}, boot, "boot:0b1a-boot", false},
		{"empty file falls through", []string{empty}, boot, "boot:0b1a-boot", false},
		{"unreadable file is an error", []string{dir}, boot, "", true}, // a directory cannot be read
		{"nothing at all", []string{missing}, missing, "", true},
	} {
		got, err := machineIDFrom(tc.files, tc.boot)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %q, %v", tc.name, got, err)
		}
	}
}
