package servicedef

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/rpbroker/broker/internal/tomltype"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Text is the human form of a definition that `broker servicedef` reads (TOML) and prints
// (TOML or JSON). Keys are the protobuf field names; isolation is a word.
type Text struct {
	ServiceName         string            `toml:"service_name" json:"service_name"`
	BinaryPath          string            `toml:"binary_path" json:"binary_path"`
	Isolation           string            `toml:"isolation" json:"isolation"`
	ExplicitInstance    string            `toml:"explicit_instance,omitempty" json:"explicit_instance,omitempty"`
	PerVersionBinaryDir string            `toml:"per_version_binary_dir,omitempty" json:"per_version_binary_dir,omitempty"`
	MinVersion          string            `toml:"min_version,omitempty" json:"min_version,omitempty"`
	VersionAllowList    []string          `toml:"version_allow_list,omitempty" json:"version_allow_list,omitempty"`
	Labels              map[string]string `toml:"labels,omitempty" json:"labels,omitempty"`
}

// textKeys lists the keys a TOML definition may use, for error messages.
const textKeys = "service_name, binary_path, isolation, explicit_instance, per_version_binary_dir, min_version, version_allow_list, [labels]"

var isolationWords = map[string]wirepb.BrokerIsolation{
	"private":  wirepb.BrokerIsolation_PRIVATE_BROKER,
	"shared":   wirepb.BrokerIsolation_SHARED_BROKER,
	"explicit": wirepb.BrokerIsolation_EXPLICIT_INSTANCE,
}

// ParseIsolation maps "private" (or ""), "shared" and "explicit" to the enum.
func ParseIsolation(s string) (wirepb.BrokerIsolation, error) {
	if s == "" {
		return wirepb.BrokerIsolation_PRIVATE_BROKER, nil
	}
	if iso, ok := isolationWords[s]; ok {
		return iso, nil
	}
	return 0, fmt.Errorf("isolation %q is not one of private, shared, explicit", s)
}

// IsolationWord is the inverse of ParseIsolation; an unknown value shows as "unknown(N)".
func IsolationWord(iso wirepb.BrokerIsolation) string {
	for w, v := range isolationWords {
		if v == iso {
			return w
		}
	}
	return fmt.Sprintf("unknown(%d)", int32(iso))
}

// ToText renders def in its human form.
func ToText(def *wirepb.ServiceDefinition) Text {
	return Text{
		ServiceName:         def.GetServiceName(),
		BinaryPath:          def.GetBinaryPath(),
		Isolation:           IsolationWord(def.GetIsolation()),
		ExplicitInstance:    def.GetExplicitInstance(),
		PerVersionBinaryDir: def.GetPerVersionBinaryDir(),
		MinVersion:          def.GetMinVersion(),
		VersionAllowList:    def.GetVersionAllowList(),
		Labels:              def.GetLabels(),
	}
}

// Proto converts the human form back; it fails only on an unknown isolation word.
func (t Text) Proto() (*wirepb.ServiceDefinition, error) {
	iso, err := ParseIsolation(t.Isolation)
	if err != nil {
		return nil, err
	}
	def := &wirepb.ServiceDefinition{
		ServiceName:         t.ServiceName,
		BinaryPath:          t.BinaryPath,
		Isolation:           iso,
		ExplicitInstance:    t.ExplicitInstance,
		PerVersionBinaryDir: t.PerVersionBinaryDir,
		MinVersion:          t.MinVersion,
		VersionAllowList:    t.VersionAllowList,
	}
	if len(t.Labels) > 0 {
		def.Labels = t.Labels
	}
	return def, nil
}

// ParseTOML reads the TOML form. Syntax errors carry the position; unknown keys and wrong
// types name the key. The result is not validated: see Validate.
func ParseTOML(name string, b []byte) (*wirepb.ServiceDefinition, error) {
	var raw map[string]any
	if err := toml.Unmarshal(b, &raw); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %w", name, row, col, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var t Text
	var errs []string
	str := func(key string, v any) string {
		s, ok := v.(string)
		if !ok {
			errs = append(errs, fmt.Sprintf("key %q: want a string, got %s", key, tomltype.Describe(v)))
		}
		return s
	}
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		v := raw[key]
		switch key {
		case "service_name":
			t.ServiceName = str(key, v)
		case "binary_path":
			t.BinaryPath = str(key, v)
		case "isolation":
			t.Isolation = str(key, v)
		case "explicit_instance":
			t.ExplicitInstance = str(key, v)
		case "per_version_binary_dir":
			t.PerVersionBinaryDir = str(key, v)
		case "min_version":
			t.MinVersion = str(key, v)
		case "version_allow_list":
			list, ok := v.([]any)
			if !ok {
				errs = append(errs, fmt.Sprintf("key %q: want an array of strings, got %s", key, tomltype.Describe(v)))
				continue
			}
			for i, e := range list {
				t.VersionAllowList = append(t.VersionAllowList, str(fmt.Sprintf("%s[%d]", key, i), e))
			}
		case "labels":
			tbl, ok := v.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Sprintf("key %q: want a table of strings, got %s", key, tomltype.Describe(v)))
				continue
			}
			t.Labels = make(map[string]string, len(tbl))
			for _, k := range slices.Sorted(maps.Keys(tbl)) {
				t.Labels[k] = str("labels."+k, tbl[k])
			}
		default:
			errs = append(errs, fmt.Sprintf("unknown key %q (known keys: %s)", key, textKeys))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", name, strings.Join(errs, "; "))
	}
	def, err := t.Proto()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return def, nil
}

// FormatTOML renders def as TOML that ParseTOML reads back to the same definition.
func FormatTOML(def *wirepb.ServiceDefinition) ([]byte, error) {
	return toml.Marshal(ToText(def))
}

// FormatJSON renders def as indented JSON with the same keys as the TOML form.
func FormatJSON(def *wirepb.ServiceDefinition) ([]byte, error) {
	b, err := json.MarshalIndent(ToText(def), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
