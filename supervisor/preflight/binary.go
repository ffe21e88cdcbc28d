package preflight

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Binary returns realpath(binary_path) after checking that it lies under
// realpath(per_version_binary_dir) and is an executable regular file. Errors are the
// "why" of a BACKEND_SPAWN_FAILED refusal, and what check and run report at start.
func Binary(def *wirepb.ServiceDefinition) (string, error) {
	bp, dir := def.GetBinaryPath(), def.GetPerVersionBinaryDir()
	switch {
	case bp == "":
		return "", errors.New("binary_path is not set")
	case dir == "":
		return "", errors.New("per_version_binary_dir is not set")
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("per_version_binary_dir %s: %w", dir, cause(err))
	}
	if fi, err := os.Stat(realDir); err != nil {
		return "", fmt.Errorf("per_version_binary_dir %s: %w", dir, cause(err))
	} else if !fi.IsDir() {
		return "", fmt.Errorf("per_version_binary_dir %s is not a directory", dir)
	}
	realBin, err := filepath.EvalSymlinks(bp)
	if err != nil {
		return "", fmt.Errorf("binary_path %s: %w", bp, cause(err))
	}
	if !strings.HasPrefix(realBin, strings.TrimSuffix(realDir, "/")+"/") {
		return "", fmt.Errorf("binary_path %s resolves to %s, outside per_version_binary_dir %s", bp, realBin, realDir)
	}
	fi, err := os.Stat(realBin)
	if err != nil {
		return "", fmt.Errorf("binary_path %s: %w", bp, cause(err))
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("binary_path %s is not a regular file", realBin)
	}
	if fi.Mode().Perm()&0o111 == 0 || unix.Access(realBin, unix.X_OK) != nil {
		return "", fmt.Errorf("binary_path %s is not executable", realBin)
	}
	return realBin, nil
}

// cause drops the *PathError wrapper whose path the caller already names.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, os.ErrNotExist) {
			return errors.New("does not exist")
		}
		return pe.Err
	}
	return err
}
