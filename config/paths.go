package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// expandPath expands a leading ~ (from $HOME) and $VAR / ${VAR} from getenv, then requires
// an absolute path. A variable that is unset or empty is an error rather than silently
// turning "$XDG_RUNTIME_DIR/x" into "/x".
func expandPath(p string, getenv func(string) string) (string, error) {
	orig := p
	if p == "~" || strings.HasPrefix(p, "~/") {
		home := getenv("HOME")
		if home == "" {
			return "", fmt.Errorf("%q starts with ~ but HOME is not set", orig)
		}
		p = home + p[1:]
	}
	var missing []string
	p = os.Expand(p, func(name string) string {
		v := getenv(name)
		if v == "" {
			missing = append(missing, "$"+name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q uses %s, which is not set", orig, strings.Join(missing, ", "))
	}
	if !filepath.IsAbs(p) && p != orig {
		return "", fmt.Errorf("%q expands to the relative path %q; want an absolute path", orig, p)
	}
	return absPath(p)
}

// absPath requires an absolute path and cleans it. Defaults taken from the environment go
// through it without expansion: their values are paths, not templates.
func absPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is relative; want an absolute path", p)
	}
	return filepath.Clean(p), nil
}

// defaultServicedefDir is the v1 service definition directory on Linux, the same rule as the
// reference: RUNNING_PROCESS_SERVICE_DEF_DIR if non-empty, else
// $XDG_CONFIG_HOME/running-process/services, else $HOME/.config/running-process/services,
// with the temp dir standing in for an unset HOME as in v1. servicedef.DefaultDir implements
// the same rule; config keeps its own copy so that it depends on names only. It reports
// which source it used.
func defaultServicedefDir(getenv func(string) string) (dir, source string) {
	if d := getenv("RUNNING_PROCESS_SERVICE_DEF_DIR"); d != "" {
		return d, "env RUNNING_PROCESS_SERVICE_DEF_DIR"
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "running-process", "services"), "default"
	}
	home := getenv("HOME")
	if home == "" {
		home = os.TempDir()
	}
	return filepath.Join(home, ".config", "running-process", "services"), "default"
}
