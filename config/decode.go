package config

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rpbroker/broker/internal/tomltype"
	"github.com/rpbroker/broker/wire/names"
)

func keySet(keys ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		m[k] = struct{}{}
	}
	return m
}

var (
	topKeys    = keySet("broker", "service")
	brokerKeys = keySet("servicedef_dir", "runtime_dir", "log_format", "log_level",
		"hello_timeout", "hello_rate_limit", "shutdown_grace", "event_log")
	serviceKeys = keySet("name", "mode", "socket", "version", "backend_endpoint",
		"handoff_endpoint", "verify", "max_connections", "idle_timeout", "start_timeout")
)

// bareKey is a TOML key that needs no quotes.
var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// decoder turns the raw koanf map into a Config, collecting every error.
type decoder struct {
	file   string
	getenv func(string) string
	layout func(string) (names.Layout, error)
	errs   []error
}

// errf records "<file>: <key>: <reason>".
func (d *decoder) errf(key, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s: %s: %s", d.file, key, fmt.Sprintf(format, args...)))
}

// wrap records "<file>: <key>: <err>", keeping err in the chain.
func (d *decoder) wrap(key string, err error) {
	d.errs = append(d.errs, fmt.Errorf("%s: %s: %w", d.file, key, err))
}

// unknown reports keys of m that are not in known, in sorted order.
func (d *decoder) unknown(m map[string]any, known map[string]struct{}, prefix string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if _, ok := known[k]; ok {
			continue
		}
		label := prefix + k
		if !bareKey.MatchString(k) {
			label = prefix + strconv.Quote(k) // as TOML would write it, and one line
		}
		if s := suggest(k, known); s != "" {
			d.errf(label, "unknown key; did you mean %s?", s)
		} else {
			d.errf(label, "unknown key; known keys: %s", strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
}

// source is one layer of values (the file, or the environment) with its error labels.
type source struct {
	m       map[string]any
	label   func(key string) string
	fromEnv bool // values are strings to be parsed
}

func (s source) has(key string) bool {
	_, ok := s.m[key]
	return ok
}

// str returns a string value; ok is false when absent or of the wrong type (reported).
func (d *decoder) str(s source, key string) (string, bool) {
	v, ok := s.m[key]
	if !ok {
		return "", false
	}
	str, ok := v.(string)
	if !ok {
		d.errf(s.label(key), "%s is %s; want a string", tomlValue(v), tomltype.Describe(v))
	}
	return str, ok
}

// integer returns a non-negative integer value no smaller than min.
func (d *decoder) integer(s source, key string, min int64) (int, bool) {
	v, ok := s.m[key]
	if !ok {
		return 0, false
	}
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case string:
		if !s.fromEnv {
			d.errf(s.label(key), "%s is a string; want an integer", tomlValue(v))
			return 0, false
		}
		var err error
		if n, err = strconv.ParseInt(strings.TrimSpace(x), 10, 64); err != nil {
			d.errf(s.label(key), "%q is not an integer", x)
			return 0, false
		}
	default:
		d.errf(s.label(key), "%s is %s; want an integer", tomlValue(v), tomltype.Describe(v))
		return 0, false
	}
	if n < min {
		d.errf(s.label(key), "%d is below the minimum %d", n, min)
		return 0, false
	}
	if n > 1<<31-1 {
		d.errf(s.label(key), "%d is too large", n)
		return 0, false
	}
	return int(n), true
}

// duration returns a Go duration given as a string; positive requires > 0, else >= 0.
func (d *decoder) duration(s source, key string, positive bool) (time.Duration, bool) {
	v, ok := s.m[key]
	if !ok {
		return 0, false
	}
	str, ok := v.(string)
	if !ok {
		d.errf(s.label(key), "%s is %s; want a duration string such as \"30s\" or \"10m\"", tomlValue(v), tomltype.Describe(v))
		return 0, false
	}
	dur, err := time.ParseDuration(strings.TrimSpace(str))
	if err != nil {
		d.errf(s.label(key), "%q is not a duration; want e.g. \"500ms\", \"30s\", \"10m\"", str)
		return 0, false
	}
	switch {
	case dur < 0:
		d.errf(s.label(key), "%q is negative", str)
		return 0, false
	case positive && dur == 0:
		d.errf(s.label(key), "%q must be greater than zero", str)
		return 0, false
	}
	return dur, true
}

// oneOf returns a string value that must be one of allowed.
func (d *decoder) oneOf(s source, key string, allowed ...string) (string, bool) {
	str, ok := d.str(s, key)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, str) {
		d.errf(s.label(key), "%q is not one of %s", str, strings.Join(allowed, ", "))
		return "", false
	}
	return str, true
}

// path returns an expanded, absolute, clean path; "" stays "" (the caller's default).
func (d *decoder) path(s source, key string) (string, bool) {
	str, ok := d.str(s, key)
	if !ok || str == "" {
		return "", ok
	}
	p, err := expandPath(str, d.getenv)
	if err != nil {
		d.wrap(s.label(key), err)
		return "", false
	}
	return p, true
}

// tomlValue renders a scalar for an error message, or a placeholder for a container.
func tomlValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "{…}"
	case []any, []map[string]any:
		return "[…]"
	case float64:
		f := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(f, ".eIN") {
			f += ".0" // show 1.0 as TOML wrote it, not as 1
		}
		return f
	default:
		return fmt.Sprint(x)
	}
}

// suggest returns the known key closest to k when it is plausibly a typo.
func suggest(k string, known map[string]struct{}) string {
	best, bestD := "", 3
	for _, c := range slices.Sorted(maps.Keys(known)) {
		dist := editDistance(k, c)
		if dist < bestD || (strings.HasPrefix(c, k) && len(k) >= 4 && best == "") {
			best, bestD = c, min(dist, bestD)
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
