package config

import (
	"strings"

	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/v2"
)

// envPrefix marks environment variables that override [broker] keys.
const envPrefix = "BROKER_"

// loadEnv returns the [broker] overrides found in environ, keyed by [broker] key name, as
// strings. Unknown BROKER_ names and empty values are skipped.
func loadEnv(environ []string) (map[string]any, error) {
	k := koanf.New(".")
	p := env.Provider(".", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) {
			key := strings.ToLower(strings.TrimPrefix(name, envPrefix))
			if _, ok := brokerKeys[key]; !ok || v == "" {
				return "", nil
			}
			return key, v
		},
	})
	if err := k.Load(p, nil); err != nil {
		return nil, err
	}
	return k.Raw(), nil
}

// envName is the variable that overrides a [broker] key.
func envName(key string) string { return envPrefix + strings.ToUpper(key) }
