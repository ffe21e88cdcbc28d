// Package names holds the v1 naming rules: service, instance and version validators, the
// per-user hash and the canonical socket paths every v1 client derives on its own.
package names

import (
	"fmt"
	"regexp"
)

const (
	// MaxServiceName is the longest valid service or instance name.
	MaxServiceName = 64
	// MaxVersion is the longest valid version string.
	MaxVersion = 64
)

var (
	serviceRe = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	versionRe = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.]+)?$`)
)

// ValidService reports whether s is a valid v1 service name: [a-z0-9-]{1,64}. Uppercase is
// rejected, never lowercased.
func ValidService(s string) bool { return serviceRe.MatchString(s) }

// ValidInstance reports whether s is a valid explicit instance name (same alphabet as a
// service name).
func ValidInstance(s string) bool { return serviceRe.MatchString(s) }

// ValidVersion reports whether s is a valid v1 version: MAJOR.MINOR.PATCH with an optional
// lower-case pre-release suffix, no "v" prefix, no build metadata, at most 64 bytes.
func ValidVersion(s string) bool { return len(s) <= MaxVersion && versionRe.MatchString(s) }

// CheckService returns a descriptive error when s is not a valid service name.
func CheckService(s string) error {
	if !ValidService(s) {
		return fmt.Errorf("invalid service name %q: want 1 to 64 of [a-z0-9-]", s)
	}
	return nil
}

// CheckVersion returns a descriptive error when s is not a valid version.
func CheckVersion(s string) error {
	if !ValidVersion(s) {
		return fmt.Errorf("invalid version %q: want MAJOR.MINOR.PATCH[-prerelease], no v prefix, no +build, at most 64 bytes", s)
	}
	return nil
}
