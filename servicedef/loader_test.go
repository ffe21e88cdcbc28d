package servicedef

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envFDMode); mode != "" {
		os.Exit(fdExhaustMain(mode, os.Getenv(envFDDir)))
	}
	goleak.VerifyTestMain(m)
}

// startLoader runs a Loader on dir until the test ends and waits for its first scan.
func startLoader(t testing.TB, dir string, opts ...Option) (*Loader, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	l := NewLoader(dir, zerolog.New(logs), opts...)
	runLoader(t, l)
	return l, logs
}

// runLoader runs l until the test ends and waits for its first scan.
func runLoader(t testing.TB, l *Loader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-l.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("loader not ready after 5s")
	}
}

func privateDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "services")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func encode(t *testing.T, d *wirepb.ServiceDefinition) []byte {
	t.Helper()
	b, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func defWith(svc, bin string) *wirepb.ServiceDefinition {
	return &wirepb.ServiceDefinition{ServiceName: svc, BinaryPath: bin}
}

// writeInPlace truncates and rewrites the file, as an editor without atomic save does.
func writeInPlace(t *testing.T, dir, svc string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, svc+Ext), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// renameOver writes a temp file in dir and renames it over the definition.
func renameOver(t testing.TB, dir, svc string, b []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, svc+Ext)); err != nil {
		t.Fatal(err)
	}
}

func binOf(l *Loader, svc string) string { return l.Lookup(svc).Def.GetBinaryPath() }

// collect drains a subscription into a slice for later inspection.
func collect(t *testing.T, ch <-chan Change) func() []Change {
	var mu sync.Mutex
	var got []Change
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { <-done })
	return func() []Change {
		mu.Lock()
		defer mu.Unlock()
		return append([]Change(nil), got...)
	}
}

func kinds(cs []Change, skip ChangeKind) string {
	var out []string
	for _, c := range cs {
		if c.Kind != skip {
			out = append(out, c.Service+":"+c.Kind.String())
		}
	}
	return strings.Join(out, " ")
}

func TestLoaderInitialScan(t *testing.T) {
	dir := privateDir(t)
	writeInPlace(t, dir, "good", encode(t, defWith("good", "/bin/good")))
	writeInPlace(t, dir, "broken", []byte("not protobuf \xff\xff"))
	writeInPlace(t, dir, "Upper", encode(t, defWith("upper", "/bin/u"))) // not a service name
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, _ := startLoader(t, dir)

	if got := strings.Join(l.ServiceNames(), ","); got != "broken,good" {
		t.Fatalf("ServiceNames = %s", got)
	}
	if lk := l.Lookup("good"); lk.Def == nil || !lk.Found || lk.Err != nil || lk.Refusal() != nil {
		t.Fatalf("good: %+v", lk)
	}
	lk := l.Lookup("broken")
	if lk.Def != nil || !lk.Found || lk.Err == nil || !strings.Contains(lk.Err.Error(), filepath.Join(dir, "broken.servicedef")) {
		t.Fatalf("broken: %+v", lk)
	}
	if r := lk.Refusal(); r == nil || !strings.HasPrefix(r.Reason, wire.ReasonServiceLoad) {
		t.Fatalf("broken refusal: %+v", r)
	}
	if lk := l.Lookup("missing"); lk.Found || lk.Def != nil || lk.Err != nil || lk.Refusal().Reason != wire.ReasonServiceNotFound {
		t.Fatalf("missing: %+v", lk)
	}
}

func TestLoaderCreateWriteRenameRemove(t *testing.T) {
	dir := privateDir(t)
	l, logs := startLoader(t, dir)
	ch, cancel := l.Subscribe()
	defer cancel()
	changes := collect(t, ch)

	writeInPlace(t, dir, "zc", encode(t, defWith("zc", "/bin/a"))) // create
	testutil.WaitFor(t, "created definition", func() bool { return binOf(l, "zc") == "/bin/a" })

	writeInPlace(t, dir, "zc", encode(t, defWith("zc", "/bin/b"))) // write in place
	testutil.WaitFor(t, "rewritten definition", func() bool { return binOf(l, "zc") == "/bin/b" })

	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/c"))) // atomic save
	testutil.WaitFor(t, "renamed-over definition", func() bool { return binOf(l, "zc") == "/bin/c" })

	if err := os.Remove(filepath.Join(dir, "zc"+Ext)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "removal", func() bool { return !l.Lookup("zc").Found })
	if r := l.Lookup("zc").Refusal(); r == nil || r.Reason != wire.ReasonServiceNotFound {
		t.Fatalf("after removal: %+v", r)
	}

	// A write in place may be seen half-done (truncated): that shows as a Rejected that
	// keeps the last good definition, so it is left out of the comparison.
	want := "zc:loaded zc:changed zc:changed zc:removed"
	testutil.WaitFor(t, "four changes", func() bool { return kinds(changes(), Rejected) == want })
	var inEffect *wirepb.ServiceDefinition
	for _, c := range changes() {
		if c.Kind == Rejected && c.Def != inEffect {
			t.Errorf("transient rejection did not keep the last good definition %v: %+v", inEffect, c)
		}
		inEffect = c.Def
	}
	for _, msg := range []string{"service definition loaded", "service definition changed", "service definition removed"} {
		if !strings.Contains(logs.String(), msg) || !strings.Contains(logs.String(), `"service":"zc"`) {
			t.Errorf("log lacks %q with service field:\n%s", msg, logs)
		}
	}
}

func TestLoaderCorruptKeepsLastGood(t *testing.T) {
	dir := privateDir(t)
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/good")))
	l, logs := startLoader(t, dir)
	ch, cancel := l.Subscribe()
	defer cancel()
	changes := collect(t, ch)

	bad := defWith("zc", "relative/bin")
	renameOver(t, dir, "zc", encode(t, bad))
	testutil.WaitFor(t, "rejection", func() bool { return l.Lookup("zc").Stale != nil })
	lk := l.Lookup("zc")
	if lk.Def.GetBinaryPath() != "/bin/good" || lk.Err != nil || lk.Refusal() != nil {
		t.Fatalf("last good not kept: %+v", lk)
	}
	if !strings.Contains(lk.Stale.Error(), `binary_path "relative/bin" is not absolute`) {
		t.Fatalf("stale error: %v", lk.Stale)
	}

	renameOver(t, dir, "zc", []byte{0x0A, 0x09, 'z'}) // truncated: a half-written file
	testutil.WaitFor(t, "second rejection", func() bool {
		s := l.Lookup("zc").Stale
		return s != nil && strings.Contains(s.Error(), "not a protobuf")
	})

	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/fixed")))
	testutil.WaitFor(t, "fixed definition", func() bool { return binOf(l, "zc") == "/bin/fixed" && l.Lookup("zc").Stale == nil })

	want := "zc:rejected zc:rejected zc:changed"
	testutil.WaitFor(t, "changes "+want, func() bool { return kinds(changes(), 0) == want || len(changes()) > 3 })
	if got := kinds(changes(), 0); got != want {
		t.Fatalf("changes %s, want %s", got, want)
	}
	for _, c := range changes()[:2] {
		if c.Def.GetBinaryPath() != "/bin/good" || c.Err == nil {
			t.Errorf("rejection change: %+v", c)
		}
	}
	if !strings.Contains(logs.String(), `"kept_last_good":true`) {
		t.Errorf("rejection not logged:\n%s", logs)
	}
}

func TestLoaderNeverGood(t *testing.T) {
	dir := privateDir(t)
	l, _ := startLoader(t, dir)
	d := defWith("zc", "/bin/zc")
	d.Isolation = wirepb.BrokerIsolation_EXPLICIT_INSTANCE
	renameOver(t, dir, "zc", encode(t, d))
	testutil.WaitFor(t, "rejected file", func() bool { return l.Lookup("zc").Found })
	lk := l.Lookup("zc")
	if lk.Def != nil || lk.Err == nil || !strings.Contains(lk.Err.Error(), "explicit_instance is empty") {
		t.Fatalf("lookup: %+v", lk)
	}
	r := lk.Refusal()
	if r == nil || r.Code != wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN || !strings.Contains(r.Reason, filepath.Join(dir, "zc.servicedef")) {
		t.Fatalf("refusal: %+v", r)
	}
}

func TestLoaderCreatesMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "services")
	l, _ := startLoader(t, dir)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir not created 0700: %v %v", fi.Mode(), err)
	}
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/zc")))
	testutil.WaitFor(t, "definition in created dir", func() bool { return binOf(l, "zc") == "/bin/zc" })
}

func TestLoaderDirUncreatableThenFixed(t *testing.T) {
	base := t.TempDir()
	blocker := filepath.Join(base, "cfg")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil { // a file where a dir should be
		t.Fatal(err)
	}
	dir := filepath.Join(blocker, "services")
	l, _ := startLoader(t, dir, WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	lk := l.Lookup("zc")
	if lk.Err == nil || !strings.Contains(lk.Err.Error(), "servicedef dir "+dir+": create") {
		t.Fatalf("lookup while dir is uncreatable: %+v", lk)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "directory created by the retry", func() bool { _, err := os.Stat(dir); return err == nil })
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/zc")))
	testutil.WaitFor(t, "definition", func() bool { return binOf(l, "zc") == "/bin/zc" })
}

func TestLoaderInsecureDir(t *testing.T) {
	dir := privateDir(t)
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/zc")))
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, _ := startLoader(t, dir, WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	ch, cancel := l.Subscribe()
	defer cancel()
	changes := collect(t, ch)

	lk := l.Lookup("zc")
	if lk.Def != nil || lk.Err == nil || !strings.Contains(lk.Err.Error(), "chmod 700 "+dir) {
		t.Fatalf("insecure dir served: %+v", lk)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "definition after chmod 700", func() bool { return binOf(l, "zc") == "/bin/zc" })

	if err := os.Chmod(dir, 0o750); err != nil { // seen through the watch on the dir itself
		t.Fatal(err)
	}
	testutil.WaitFor(t, "refusal after chmod 750", func() bool { return l.Lookup("zc").Def == nil })
	want := "zc:loaded zc:rejected"
	testutil.WaitFor(t, "changes "+want, func() bool { return kinds(changes(), 0) == want })
	if c := changes()[1]; c.Def != nil || !strings.Contains(c.Err.Error(), "chmod 700") {
		t.Fatalf("rejection: %+v", c)
	}
}

func TestLoaderDirRemovedWhileWatched(t *testing.T) {
	dir := privateDir(t)
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/zc")))
	l, _ := startLoader(t, dir, WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "service gone", func() bool { return !l.Lookup("zc").Found && l.Lookup("zc").Err == nil })
	testutil.WaitFor(t, "dir recreated", func() bool { _, err := os.Stat(dir); return err == nil })
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/again")))
	testutil.WaitFor(t, "definition after recreation", func() bool { return binOf(l, "zc") == "/bin/again" })
}

// unwatchedLink gives a path outside dir to svc's definition (a hard link): writing through
// it changes the definition without any event on dir's watch, so only a rescan can see it.
func unwatchedLink(t *testing.T, dir, svc string) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), svc+"-link")
	if err := os.Link(filepath.Join(dir, svc+Ext), link); err != nil {
		t.Fatal(err)
	}
	return link
}

func writeThrough(t *testing.T, link string, b []byte) {
	t.Helper()
	if err := os.WriteFile(link, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoaderRescanSeesUnwatchedWrite(t *testing.T) {
	dir := privateDir(t)
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/a")))
	l, logs := startLoader(t, dir)
	link := unwatchedLink(t, dir, "zc")

	writeThrough(t, link, encode(t, defWith("zc", "/bin/b")))
	l.Rescan()
	testutil.WaitFor(t, "definition after requested rescan", func() bool { return binOf(l, "zc") == "/bin/b" })

	writeThrough(t, link, encode(t, defWith("zc", "/bin/c")))
	l.Rescan()
	testutil.WaitFor(t, "second definition after requested rescan", func() bool { return binOf(l, "zc") == "/bin/c" })
	if !strings.Contains(logs.String(), "servicedef rescan requested") {
		t.Errorf("rescan not logged:\n%s", logs)
	}
}

func TestLoaderBackstopRescan(t *testing.T) {
	dir := privateDir(t)
	renameOver(t, dir, "zc", encode(t, defWith("zc", "/bin/a")))
	l, _ := startLoader(t, dir, WithRescanInterval(5*time.Millisecond))
	writeThrough(t, unwatchedLink(t, dir, "zc"), encode(t, defWith("zc", "/bin/b")))
	testutil.WaitFor(t, "definition from the periodic rescan", func() bool { return binOf(l, "zc") == "/bin/b" })
}

func TestLoaderSlowSubscriberGetsResync(t *testing.T) {
	dir := privateDir(t)
	l, _ := startLoader(t, dir, WithSubscriberBuffer(1))
	ch, cancel := l.Subscribe()
	defer cancel()

	for _, svc := range []string{"a", "b"} {
		renameOver(t, dir, svc, encode(t, defWith(svc, "/bin/"+svc)))
		testutil.WaitFor(t, svc, func() bool { return l.Lookup(svc).Def != nil })
	}
	if c := <-ch; c.Kind != Loaded || c.Service != "a" {
		t.Fatalf("first change: %+v", c)
	}
	renameOver(t, dir, "c", encode(t, defWith("c", "/bin/c")))
	testutil.WaitFor(t, "c", func() bool { return l.Lookup("c").Def != nil }) // the loader did not block
	if c := <-ch; c.Kind != Resync {
		t.Fatalf("want Resync after dropped changes, got %+v", c)
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after cancel")
	}
}

func TestLoaderRunEndClosesSubscribers(t *testing.T) {
	l := NewLoader(privateDir(t), zerolog.Nop())
	ch, cancel := l.Subscribe()
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	<-l.Ready()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("subscriber channel still open after Run returned")
	}
	if err := l.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
	late, _ := l.Subscribe()
	if _, ok := <-late; ok {
		t.Fatal("subscription after Run returned is open")
	}
}

func TestLoaderRelativeDir(t *testing.T) {
	l := NewLoader("rel/dir", zerolog.Nop())
	if err := l.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("got %v", err)
	}
}

func TestLoaderOddFiles(t *testing.T) {
	dir := privateDir(t)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"+Ext), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"+Ext), 0o700); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, dir, "big", make([]byte, MaxFileSize+1))
	l, _ := startLoader(t, dir) // a FIFO must not block the first scan
	for svc, want := range map[string]string{"fifo": "not a regular file", "sub": "not a regular file", "big": "larger than"} {
		lk := l.Lookup(svc)
		if lk.Def != nil || lk.Err == nil || !strings.Contains(lk.Err.Error(), want) || !strings.Contains(lk.Err.Error(), svc+Ext) {
			t.Errorf("%s: %+v, want error %q", svc, lk, want)
		}
	}
	snap := l.Snapshot()
	if snap.Dir() != dir || snap.DirErr() != nil || l.Dir() != dir {
		t.Fatalf("snapshot dir %s err %v", snap.Dir(), snap.DirErr())
	}
}
