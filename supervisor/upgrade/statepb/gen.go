// Package statepb holds the generated protobuf types of the upgrade state: what a running
// broker hands to the image that replaces it in place. It is internal to one broker
// process across an execve, not part of the v1 wire protocol. Regenerate with
// `go generate ./...` (needs protoc and protoc-gen-go v1.36.12).
package statepb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative state.proto
