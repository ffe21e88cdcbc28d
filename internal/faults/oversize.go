package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/rpbroker/broker/wire"
)

const (
	oversizeConns  = 200 // connections per round, each announcing a 16 MiB frame
	oversizeRounds = 3   // see oversizeFrame
	oversizeHold   = 1500 * time.Millisecond
)

// oversizeFrame (issue 10 item 1): 200 same-uid connections each send a 5-byte header
// announcing a 16 MiB body and nothing more, are held 1.5 s, then closed; three rounds.
// A fresh 16 MiB buffer is untouched address space (VmData) and becomes resident (VmRSS)
// once the heap reuses and zeroes it, hence the rounds. Figures: peak growth over the
// idle broker over the whole run, and what is left 1 s after the last round closed.
func oversizeFrame(ctx context.Context, env *runEnv) (string, error) {
	r, err := newRig(env, "oversize-frame")
	if err != nil {
		return "", err
	}
	defer r.close()
	sock := r.sock("big")
	svc := fmt.Sprintf("name = \"*\"\nmode = \"launch\"\nsocket = %q\nmax_connections = 1024", sock)
	if err := r.writeConfig(svc); err != nil {
		return "", err
	}
	if err := r.start(ctx, sock); err != nil {
		return "", err
	}
	base, err := memKB(r.pid())
	if err != nil {
		return "", err
	}
	hdr := []byte{wire.FramingVersion, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(hdr[1:], wire.MaxFrameBody)
	var peak mem
	for range oversizeRounds {
		conns, err := dialHold(sock, oversizeConns, hdr)
		if err == nil {
			err = peakMem(ctx, r.pid(), oversizeHold, &peak)
		}
		closeAll(conns)
		if err == nil { // the broker sees EOF and drops the connection
			err = peakMem(ctx, r.pid(), time.Second, &peak)
		}
		if err != nil {
			return "", err
		}
	}
	after, err := memKB(r.pid())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("rss_growth_mb=%.1f vmdata_growth_mb=%.1f rss_after_close_mb=%.1f connections=%d rounds=%d",
		mb(peak.rss-base.rss), mb(peak.data-base.data), mb(after.rss-base.rss), oversizeConns, oversizeRounds), nil
}

// mem is a process's resident set and data segment, in KiB.
type mem struct{ rss, data int64 }

// peakMem samples pid every 50 ms for d, raising peak to the highest values seen.
func peakMem(ctx context.Context, pid int, d time.Duration, peak *mem) error {
	end := time.Now().Add(d)
	for {
		m, err := memKB(pid)
		if err != nil {
			return err
		}
		peak.rss, peak.data = max(peak.rss, m.rss), max(peak.data, m.data)
		if !time.Now().Before(end) {
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// sleepCtx waits d, or less when ctx ends. The faults measure over fixed windows; this
// is a window, not a synchronisation.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
