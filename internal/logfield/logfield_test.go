package logfield

import (
	"testing"
	"time"
)

func TestDur(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{750 * time.Nanosecond, "750ns"},
		{340_512 * time.Nanosecond, "341µs"},
		{22_812_345 * time.Nanosecond, "22.8ms"},
		{100 * time.Millisecond, "100ms"},
		{1_534_000_000 * time.Nanosecond, "1.53s"},
		{30 * time.Second, "30s"},
		{90*time.Second + 123*time.Millisecond, "1m30.1s"},
		{-22_812_345 * time.Nanosecond, "-22.8ms"},
	} {
		if got := Dur(tc.d); got != tc.want {
			t.Errorf("Dur(%d) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
