package serve

import (
	"encoding/binary"
	"net"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// testConn is a client connection that can tell how much of what it sent is unread.
type testConn struct{ *net.UnixConn }

// outq is how many bytes c sent that the broker has not read yet (SIOCOUTQ).
func (c *testConn) outq(t testing.TB) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// TestOversizeHeadersHoldNoBody: connections that announce a 16 MiB Hello and send part
// of it must not make the broker hold their bodies.
func TestOversizeHeadersHoldNoBody(t *testing.T) {
	const conns, sent = 32, 128 << 10
	h := startLoop(t, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	// A valid start of a frame: header for 16 MiB, then the payload field of that size.
	raw := binary.LittleEndian.AppendUint32([]byte{wire.FramingVersion}, wire.MaxFrameBody)
	raw = protowire.AppendTag(raw, 4, protowire.BytesType)
	raw = protowire.AppendVarint(raw, wire.MaxFrameBody-8)
	raw = append(raw, make([]byte, sent)...)

	before := heapInUse()
	var cs []*testConn
	for range conns {
		c := h.dial()
		defer c.Close()
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, &testConn{c})
	}
	testutil.WaitFor(t, "the broker to read every byte sent", func() bool {
		for _, c := range cs {
			if c.outq(t) != 0 {
				return false
			}
		}
		return true
	})
	grown := int64(heapInUse()) - int64(before)
	t.Logf("heap and stacks grew %d KiB for %d connections each announcing 16 MiB and sending %d KiB", grown>>10, conns, sent>>10)
	if limit := int64(conns * (wire.MaxHelloBody + 16<<10)); grown > limit {
		t.Fatalf("heap grew %d bytes, limit %d (Hello cap plus a constant per connection)", grown, limit)
	}
	// Each still gets the v1 answer for a frame that ends early.
	for _, c := range cs {
		c.CloseWrite()
		f, err := wire.ReadFrame(c, wire.MaxFrameBody)
		if err != nil {
			t.Fatalf("no refusal: %v", err)
		}
		if r := h.helloReplyOf(f).GetRefused(); r == nil || r.Code != wirepb.ErrorCode_ERROR_PEER_REJECTED || r.Reason != wire.ReasonIncompleteHello {
			t.Fatalf("got %v", r)
		}
	}
}

// heapInUse is live heap plus goroutine stacks: a buffer the compiler placed on a
// connection goroutine's stack is held memory too.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// BenchmarkOversizeHello: one complete 1 MiB Hello frame refused per iteration, through
// a real serve loop; B/op is what the broker (and the trivial client) allocated for it.
func BenchmarkOversizeHello(b *testing.B) {
	h := startLoop(b, Settings{Service: "zc", Router: okRouter()}, mapDefs{"zc": {Def: zcDef, Found: true}}, nil)
	m := goodHello()
	f := helloFrame(b, m)
	f.Payload = make([]byte, 1<<20)
	raw := frameBytes(b, f)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fr, err := h.roundTrip(raw)
		if err != nil {
			b.Fatal(err)
		}
		if fr.RequestId != 77 {
			b.Fatalf("request id not echoed: %v", fr)
		}
	}
}
