package admin

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Envelope is what every JSON reply carries besides its verb's fields.
type Envelope struct {
	SchemaVersion     int    `json:"schema_version"`
	Command           string `json:"command"`
	GeneratedAtUnixMS int64  `json:"generated_at_unix_ms"`
}

// Encode renders a typed reply as the v1 JSON document: the envelope merged with v's
// fields, keys sorted at every level and indented by two spaces. v1 clients have always
// seen sorted keys, and a reply whose keys do not move diffs cleanly between runs.
func Encode(command string, at int64, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", command, err)
	}
	// Through a generic value: maps are encoded with sorted keys, and UseNumber keeps
	// every number's digits as they were.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("encode %s: %w", command, err)
	}
	m["schema_version"] = 1
	m["command"] = command
	m["generated_at_unix_ms"] = at
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", command, err)
	}
	return append(out, '\n'), nil
}

func (h *Handler) json(command string, v any) *wirepb.AdminReply {
	b, err := Encode(command, h.now().UnixMilli(), v)
	if err != nil {
		return text(err.Error()+"\n", 1)
	}
	return &wirepb.AdminReply{Kind: wirepb.AdminReplyKind_JSON, Body: string(b), ContentType: contentJSON}
}
