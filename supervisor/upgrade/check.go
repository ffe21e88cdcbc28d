package upgrade

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/rpbroker/broker/wire/identity"
)

// BuildID names the running binary by content: the identity hash (BLAKE3) of the
// executable, so two builds of the same version tell apart in status and in the upgrade
// log.
func BuildID() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("build id: %w", err)
	}
	return BuildIDOf(exe)
}

// BuildIDOf is the build id of the binary at path.
func BuildIDOf(path string) (string, error) {
	h, err := identity.HashFile(path)
	if err != nil {
		return "", fmt.Errorf("build id of %s: %w", path, err)
	}
	return hex.EncodeToString(h[:8]), nil
}

// CheckState is the new binary's side of the pre-check: it reads the state at f and
// answers whether this image can restore it (format version understood, envelope
// intact), with the warnings decoding gave.
func CheckState(f *os.File) (version uint32, warnings []string, err error) {
	b, err := ReadState(f)
	if err != nil {
		return 0, nil, err
	}
	if version, err = Version(b); err != nil {
		return 0, nil, err
	}
	if _, err := Decode(b, func(w string) { warnings = append(warnings, w) }); err != nil {
		return version, warnings, err
	}
	return version, warnings, nil
}
