package config

import (
	"strings"
	"testing"
)

func TestExpandPath(t *testing.T) {
	env := map[string]string{"HOME": "/home/u", "X": "/x", "REL": "rel", "EMPTY": ""}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct{ in, want, err string }{
		{in: "/abs/./p/", want: "/abs/p"},
		{in: "~", want: "/home/u"},
		{in: "~/a", want: "/home/u/a"},
		{in: "$X/a", want: "/x/a"},
		{in: "${X}/a/$X", want: "/x/a/x"},
		{in: "~/$REL", want: "/home/u/rel"},
		{in: "rel/a", err: `"rel/a" is relative`},
		{in: "~bob/a", err: `"~bob/a" is relative`},
		{in: "$REL/a", err: `expands to the relative path "rel/a"`},
		{in: "$MISSING/a", err: `uses $MISSING, which is not set`},
		{in: "$EMPTY/a", err: `uses $EMPTY, which is not set`},
	} {
		got, err := expandPath(tc.in, getenv)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("expandPath(%q) err = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("expandPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := expandPath("~/a", func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "HOME is not set") {
		t.Errorf("~ without HOME: %v", err)
	}
}
