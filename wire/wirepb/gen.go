// Package wirepb holds the generated protobuf types of the running-process broker v1 wire
// protocol. Regenerate with `go generate ./...` (needs protoc and protoc-gen-go v1.36.12).
package wirepb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative broker.proto
