package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// hello sends one Hello for service 1.0.0 on sock, bounded by 2 s.
func hello(ctx context.Context, sock, service string) (*wirepb.Negotiated, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return client.Hello(ctx, sock, &wirepb.Hello{
		ClientMinProtocol: wire.ProtocolVersion, ClientMaxProtocol: wire.ProtocolVersion,
		ServiceName: service, WantedVersion: "1.0.0", PeerPid: uint32(os.Getpid()),
		ClientLibName: "rpb-faults", ClientLibVersion: "1",
	})
}

// outcome names a Hello result for counting: "negotiated", the refusal code, or "error".
func outcome(err error) string {
	if err == nil {
		return "negotiated"
	}
	if ref, ok := refusal(err); ok {
		return codeName(ref.Code)
	}
	return "error"
}

// codeName is the refusal code as the issue names it: RATE_LIMITED, not ERROR_RATE_LIMITED.
func codeName(c wirepb.ErrorCode) string { return strings.TrimPrefix(c.String(), "ERROR_") }

func refusal(err error) (*client.RefusedError, bool) {
	var ref *client.RefusedError
	ok := errors.As(err, &ref)
	return ref, ok
}

// dialHold opens n connections to sock that write nothing (or pre, when set) and stay
// open until closeAll. Dial failures stop early; the caller sees how many it got.
func dialHold(sock string, n int, pre []byte) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err != nil {
			return conns, fmt.Errorf("dial %s after %d connections: %w", sock, len(conns), err)
		}
		conns = append(conns, c)
		if pre != nil {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(pre); err != nil {
				return conns, fmt.Errorf("write to %s: %w", sock, err)
			}
		}
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// counts renders a tally as "a:1,b:2" in key order ("none" when empty).
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

func writeAtomic(path string, b []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// waitUntil polls cond every 20 ms until it returns nil; past limit (or ctx) it returns
// cond's last error.
func waitUntil(ctx context.Context, limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
