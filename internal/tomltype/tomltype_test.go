package tomltype

import (
	"testing"
	"time"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{"x", "a string"}, {int64(1), "an integer"}, {1.5, "a float"}, {true, "a boolean"},
		{map[string]any{}, "a table"}, {[]any{}, "an array"}, {[]map[string]any{}, "an array"},
		{time.Now(), "a date/time"},
	} {
		if got := Describe(tc.v); got != tc.want {
			t.Errorf("Describe(%T) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
