package config

import (
	"errors"
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
	if !filepath.IsAbs(p) {
		if p == orig {
			return "", fmt.Errorf("%q is relative; want an absolute path", orig)
		}
		return "", fmt.Errorf("%q expands to the relative path %q; want an absolute path", orig, p)
	}
	return filepath.Clean(p), nil
}

// errNoHome is returned when neither the config home nor HOME is known.
var errNoHome = errors.New("neither XDG_CONFIG_HOME nor HOME is set")

// defaultServicedefDir is the v1 service definition directory on Linux, the same rule as the
// reference: RUNNING_PROCESS_SERVICE_DEF_DIR if non-empty, else
// $XDG_CONFIG_HOME/running-process/services, else ~/.config/running-process/services.
// (servicedef.DefaultDir implements the same rule; config does not import servicedef.)
// It reports which of them it used.
func defaultServicedefDir(getenv func(string) string) (dir, source string, err error) {
	if d := getenv("RUNNING_PROCESS_SERVICE_DEF_DIR"); d != "" {
		return d, "env RUNNING_PROCESS_SERVICE_DEF_DIR", nil
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "running-process", "services"), "default", nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "running-process", "services"), "default", nil
	}
	return "", "", errNoHome
}
