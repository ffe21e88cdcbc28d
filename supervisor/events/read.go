package events

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Decode parses a log's bytes into events. A record cut short at the end of b (a torn
// last write, or a file read while it is appended to) ends the log without an error. A
// bad framing byte, a record longer than MaxRecordBytes or an undecodable event is an
// error; the events before it are returned with it.
func Decode(b []byte) ([]*wirepb.LifecycleEvent, error) {
	var out []*wirepb.LifecycleEvent
	r := bytes.NewReader(b)
	for off := 0; r.Len() > 0; off = len(b) - r.Len() {
		body, err := wire.ReadFrameBody(r, MaxEventBytes)
		if errors.Is(err, wire.ErrHeaderEOF) || errors.Is(err, wire.ErrBodyEOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("record at offset %d: %w", off, err)
		}
		m := new(wirepb.LifecycleEvent)
		if err := proto.Unmarshal(body, m); err != nil {
			return out, fmt.Errorf("record at offset %d: decode event: %w", off, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// ReadFile reads one log file.
func ReadFile(path string) ([]*wirepb.LifecycleEvent, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("event log %s: %w", path, err)
	}
	evs, err := Decode(b)
	if err != nil {
		return evs, fmt.Errorf("event log %s: %w", path, err)
	}
	return evs, nil
}

// ReadAll reads the rotated files path.N … path.1 and then path, oldest event first.
// Missing files are skipped; rotation numbers are probed upwards from 1 until one is absent.
func ReadAll(path string) ([]*wirepb.LifecycleEvent, error) {
	files := []string{path}
	for i := 1; ; i++ {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		files = append([]string{p}, files...)
	}
	var all []*wirepb.LifecycleEvent
	for _, p := range files {
		evs, err := ReadFile(p)
		all = append(all, evs...)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return all, err
		}
	}
	return all, nil
}
