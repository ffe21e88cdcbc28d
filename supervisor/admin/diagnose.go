package admin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rpbroker/broker/wire/wirepb"
)

// bundleContents is what a diagnose bundle holds.
var bundleContents = []string{"status", "dump", "config", "metrics"}

// diagnoseBundle is the file DIAGNOSE writes.
type diagnoseBundle struct {
	SchemaVersion     int              `json:"schema_version"`
	GeneratedAtUnixMS int64            `json:"generated_at_unix_ms"`
	Status            StatusReply      `json:"status"`
	Dump              DumpReply        `json:"dump"`
	Config            *EffectiveConfig `json:"config,omitempty"`
	Metrics           string           `json:"metrics,omitempty"`
}

// diagnose describes the bundle and, when output_path is given, writes it there (ours:
// v1 only describes it): one JSON file, mode 0600, never replacing an existing file.
func (h *Handler) diagnose(outputPath string) *wirepb.AdminReply {
	r := DiagnoseReply{Bundle: Bundle{Contents: bundleContents}, Status: h.status()}
	if outputPath != "" {
		n, err := h.writeBundle(outputPath)
		if err != nil {
			return text(fmt.Sprintf("diagnose: %v\n", err), 1)
		}
		r.Bundle.Written, r.Bundle.Path, r.Bundle.Bytes = true, outputPath, n
	}
	return h.json("diagnose", r)
}

func (h *Handler) writeBundle(path string) (int, error) {
	if !filepath.IsAbs(path) {
		return 0, fmt.Errorf("output_path %q must be absolute", path)
	}
	bundle := diagnoseBundle{
		SchemaVersion:     1,
		GeneratedAtUnixMS: h.now().UnixMilli(),
		Status:            h.status(),
		Dump:              h.dump(),
	}
	if h.Config != nil {
		c := h.Config()
		bundle.Config = &c
	}
	if h.Metrics != nil {
		if m, err := h.Metrics(); err == nil {
			bundle.Metrics = m
		}
	}
	b, err := json.MarshalIndent(bundle, "", "  ")
	if err != nil {
		return 0, fmt.Errorf("encode bundle: %w", err)
	}
	// O_EXCL: an admin request must not be a way to overwrite files.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("write bundle: %w", err)
	}
	n, err := f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("write bundle %s: %w", path, err)
	}
	return n, nil
}
