package launch

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestCaptureLinesBoundsLengthAndRate(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes+100)
	cases := []struct {
		name    string
		in      string
		burst   int
		want    []string // logged messages, in order
		dropped int      // total reported as dropped
		cut     int      // lines marked truncated
	}{
		{"lines", "one\ntwo\r\nthree", 10, []string{"one", "two", "three"}, 0, 0},
		{"empty lines skipped", "a\n\n\nb\n", 10, []string{"a", "b"}, 0, 0},
		{"long line cut", long + "\nnext\n", 10, []string{long[:maxLineBytes], "next"}, 0, 1},
		{"over the rate", "1\n2\n3\n4\n5\n", 2, []string{"1", "2"}, 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			frozen := time.Unix(1000, 0)
			rate := newLineRate(1, tc.burst, func() time.Time { return frozen })
			captureLines(strings.NewReader(tc.in), zerolog.New(&out), rate)
			var got []string
			dropped, cut := 0, 0
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var rec struct {
					Message   string `json:"message"`
					Dropped   int    `json:"dropped_lines"`
					Truncated bool   `json:"truncated"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if rec.Dropped > 0 {
					dropped += rec.Dropped
					continue
				}
				if rec.Truncated {
					cut++
				}
				got = append(got, rec.Message)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
			if dropped != tc.dropped || cut != tc.cut {
				t.Errorf("dropped %d cut %d, want %d and %d", dropped, cut, tc.dropped, tc.cut)
			}
		})
	}
}

func TestLineRateRefills(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newLineRate(10, 2, func() time.Time { return now })
	for i, want := range []bool{true, true, false} {
		if got := r.allow(); got != want {
			t.Fatalf("allow #%d = %v, want %v", i, got, want)
		}
	}
	now = now.Add(100 * time.Millisecond) // one token at 10 lines/s
	if !r.allow() || r.allow() {
		t.Fatal("refill after 100ms should allow exactly one line")
	}
}
