// Package servicedef reads, validates and writes v1 service definitions (`<service>.servicedef`
// files holding a raw protobuf ServiceDefinition) and keeps a directory of them loaded.
package servicedef

import (
	"fmt"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Ext is the file extension of a service definition.
const Ext = ".servicedef"

// ValidationError lists every problem found in one definition. It renders on one line so it
// can travel in a refusal reason or a log field.
type ValidationError struct {
	File     string    // the file, or "<service>.servicedef" when validated without one
	Problems []Problem // in field-number order
}

// Problem is one failed rule, naming the field it concerns.
type Problem struct {
	Field string // protobuf field name, e.g. "binary_path" or "version_allow_list[2]"
	Msg   string // what is wrong, starting with the field and its value
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Msg
	}
	return "servicedef " + e.File + ": " + strings.Join(msgs, "; ")
}

// Stem is the service name a file path stands for: its base name without ".servicedef".
func Stem(path string) string {
	return strings.TrimSuffix(filepath.Base(path), Ext)
}

// Decode decodes the bytes of the file at path and validates them, including that
// service_name equals the file's stem.
func Decode(path string, b []byte) (*wirepb.ServiceDefinition, error) {
	def, err := DecodeUnchecked(path, b)
	if err != nil {
		return nil, err
	}
	if err := validate(def, Stem(path), path); err != nil {
		return nil, err
	}
	return def, nil
}

// DecodeUnchecked decodes the protobuf bytes without validating the content, for tools that
// show a broken file.
func DecodeUnchecked(path string, b []byte) (*wirepb.ServiceDefinition, error) {
	def := &wirepb.ServiceDefinition{}
	if err := proto.Unmarshal(b, def); err != nil {
		return nil, fmt.Errorf("servicedef %s: not a protobuf ServiceDefinition: %w", path, err)
	}
	return def, nil
}

// Encode renders def deterministically (fields ascending, labels sorted), byte-identical for
// equal definitions.
func Encode(def *wirepb.ServiceDefinition) ([]byte, error) {
	b, err := wire.Marshal(def)
	if err != nil {
		return nil, fmt.Errorf("servicedef %s: encode: %w", def.GetServiceName(), err)
	}
	return b, nil
}

// Validate applies every v1 rule for a service definition. service_name must equal stem unless stem is
// empty. The error is a *ValidationError listing all problems.
func Validate(def *wirepb.ServiceDefinition, stem string) error {
	file := stem + Ext
	if stem == "" {
		file = def.GetServiceName() + Ext
	}
	return validate(def, stem, file)
}

func validate(def *wirepb.ServiceDefinition, stem, file string) error {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: field + " " + fmt.Sprintf(format, args...)})
	}

	switch svc := def.GetServiceName(); {
	case !names.ValidService(svc):
		add("service_name", "%q is not a valid service name (want 1 to 64 of [a-z0-9-])", svc)
	case stem != "" && svc != stem:
		add("service_name", "%q does not match the file name %q (want %s%s)", svc, stem+Ext, svc, Ext)
	}

	switch bp := def.GetBinaryPath(); {
	case bp == "":
		add("binary_path", "is empty (want an absolute path)")
	case !filepath.IsAbs(bp):
		add("binary_path", "%q is not absolute", bp)
	}

	iso := def.GetIsolation()
	inst := def.GetExplicitInstance()
	switch iso {
	case wirepb.BrokerIsolation_PRIVATE_BROKER, wirepb.BrokerIsolation_SHARED_BROKER:
		if inst != "" {
			add("explicit_instance", "%q must be empty when isolation is %s", inst, iso)
		}
	case wirepb.BrokerIsolation_EXPLICIT_INSTANCE:
		switch {
		case inst == "":
			add("explicit_instance", "is empty but isolation is EXPLICIT_INSTANCE (want an instance name)")
		case !names.ValidInstance(inst):
			add("explicit_instance", "%q is not a valid instance name (want 1 to 64 of [a-z0-9-])", inst)
		}
	default:
		add("isolation", "%d is not one of PRIVATE_BROKER (0), SHARED_BROKER (1), EXPLICIT_INSTANCE (2)", int32(iso))
	}

	if d := def.GetPerVersionBinaryDir(); d != "" && !filepath.IsAbs(d) {
		add("per_version_binary_dir", "%q is not absolute", d)
	}
	if v := def.GetMinVersion(); v != "" && !names.ValidVersion(v) {
		add("min_version", "%q is not a valid version (want MAJOR.MINOR.PATCH[-prerelease])", v)
	}
	for i, v := range def.GetVersionAllowList() {
		if !names.ValidVersion(v) {
			add(fmt.Sprintf("version_allow_list[%d]", i), "%q is not a valid version (want MAJOR.MINOR.PATCH[-prerelease])", v)
		}
	}

	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{File: file, Problems: ps}
}

// InstanceID is the backend registry namespace of a definition: "private:<svc>", "shared"
// or "explicit:<name>".
func InstanceID(def *wirepb.ServiceDefinition) (string, error) {
	switch iso := def.GetIsolation(); iso {
	case wirepb.BrokerIsolation_PRIVATE_BROKER:
		return names.PrivateInstance(def.GetServiceName()), nil
	case wirepb.BrokerIsolation_SHARED_BROKER:
		return names.SharedInstance, nil
	case wirepb.BrokerIsolation_EXPLICIT_INSTANCE:
		if !names.ValidInstance(def.GetExplicitInstance()) {
			return "", fmt.Errorf("service %q: explicit_instance %q is not a valid instance name", def.GetServiceName(), def.GetExplicitInstance())
		}
		return names.ExplicitInstance(def.GetExplicitInstance()), nil
	default:
		return "", fmt.Errorf("service %q: unknown isolation %d", def.GetServiceName(), int32(iso))
	}
}
