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
	evs, _, err := decodePrefix(b)
	return evs, err
}

// decodePrefix is Decode that also says how many bytes the whole records took: a
// follower keeps the rest until the writer completes it.
func decodePrefix(b []byte) ([]*wirepb.LifecycleEvent, int, error) {
	var out []*wirepb.LifecycleEvent
	r := bytes.NewReader(b)
	off := 0
	for ; r.Len() > 0; off = len(b) - r.Len() {
		body, err := wire.ReadFrameBody(r, MaxEventBytes)
		if errors.Is(err, wire.ErrHeaderEOF) || errors.Is(err, wire.ErrBodyEOF) {
			return out, off, nil
		}
		if err != nil {
			return out, off, fmt.Errorf("record at offset %d: %w", off, err)
		}
		m := new(wirepb.LifecycleEvent)
		if err := proto.Unmarshal(body, m); err != nil {
			return out, off, fmt.Errorf("record at offset %d: decode event: %w", off, err)
		}
		out = append(out, m)
	}
	return out, off, nil
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
// Missing files are skipped.
func ReadAll(path string) ([]*wirepb.LifecycleEvent, error) {
	return readFiles(append(rotatedFiles(path), path))
}

// rotatedFiles lists path.N … path.1, oldest first. Rotation numbers are probed upwards
// from 1 until two in a row are absent: a rotation in progress renames its files one
// number up, leaving one gap at a time.
func rotatedFiles(path string) []string {
	var files []string
	for i, gap := 1, 0; gap < 2; i++ {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err != nil {
			gap++
			continue
		}
		gap = 0
		files = append([]string{p}, files...)
	}
	return files
}

func readFiles(files []string) ([]*wirepb.LifecycleEvent, error) {
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
