package events

import (
	"cmp"
	"maps"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

const (
	// MaxRecordBytes bounds one on-disk record, frame header included: the POSIX
	// PIPE_BUF floor, so one write(2) of it is atomic on every platform.
	MaxRecordBytes = 512
	// MaxEventBytes bounds the encoded LifecycleEvent inside a record.
	MaxEventBytes = MaxRecordBytes - wire.HeaderLen
)

// Bound shrinks m in place until its encoding is at most limit bytes and reports whether
// it had to. The cuts are deterministic and stop as soon as the event fits:
//  1. reason is cut from its end;
//  2. extra values are cut from their ends, longest value first (ties by key), so short
//     values such as exit codes survive a long one;
//  3. extra entries are dropped, keys in descending order;
//  4. request_id, broker_instance, service_name and severity_text are cut, in that order.
//
// Cuts never split a UTF-8 sequence. Removing n bytes from a string field shrinks the
// encoding by at least n, so each step needs one pass; the scalar fields left after step 4
// take under 50 bytes, so any limit of 50 or more is always met.
func Bound(m *wirepb.LifecycleEvent, limit int) bool {
	over := func() int { return proto.Size(m) - limit }
	if over() <= 0 {
		return false
	}
	m.Reason = cut(m.Reason, over())
	keys := slices.SortedFunc(maps.Keys(m.Extra), func(a, b string) int {
		return cmp.Or(cmp.Compare(len(m.Extra[b]), len(m.Extra[a])), cmp.Compare(a, b))
	})
	for _, k := range keys {
		if n := over(); n > 0 {
			m.Extra[k] = cut(m.Extra[k], n)
		}
	}
	slices.Sort(keys)
	for i := len(keys) - 1; i >= 0 && over() > 0; i-- {
		delete(m.Extra, keys[i])
	}
	for _, s := range []*string{&m.RequestId, &m.BrokerInstance, &m.ServiceName, &m.SeverityText} {
		if n := over(); n > 0 {
			*s = cut(*s, n)
		}
	}
	return true
}

// cut drops at least n bytes from the end of s without splitting a rune.
func cut(s string, n int) string {
	keep := len(s) - n
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep]
}

// Encode bounds m to MaxEventBytes and returns its framed record.
func Encode(m *wirepb.LifecycleEvent) (rec []byte, truncated bool, err error) {
	truncated = Bound(m, MaxEventBytes)
	body, err := wire.Marshal(m)
	if err != nil {
		return nil, truncated, err
	}
	return wire.AppendFrame(make([]byte, 0, wire.HeaderLen+len(body)), body), truncated, nil
}
