package names

import "strings"

// CompareVersions compares the numeric MAJOR.MINOR.PATCH of two valid versions, ignoring
// any pre-release suffix (v1 semantics). It returns -1, 0 or 1. Components too large for
// uint64 still compare numerically.
func CompareVersions(a, b string) int {
	pa, pb := coreParts(a), coreParts(b)
	for i := range 3 {
		if c := compareNumeric(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return 0
}

func coreParts(v string) [3]string {
	if i := strings.IndexByte(v, '-'); i >= 0 {
		v = v[:i]
	}
	var out [3]string
	for i, p := range strings.SplitN(v, ".", 3) {
		out[i] = p
	}
	return out
}

func compareNumeric(a, b string) int {
	// Digit strings without leading zeros order by length, then lexically: numeric order
	// without overflow.
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	switch {
	case len(a) != len(b):
		if len(a) < len(b) {
			return -1
		}
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
