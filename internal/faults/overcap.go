package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// overCapClients is how many silent clients arrive over the cap at once.
const overCapClients = 100

// overCap (issue 10 item 6): max_connections = 1, one connection held, then 100 clients
// that write nothing; how many of them read a refusal frame before the broker closed.
func overCap(ctx context.Context, env *runEnv) (string, error) {
	r, err := newRig(env, "over-cap")
	if err != nil {
		return "", err
	}
	defer r.close()
	sock := r.sock("cap")
	svc := fmt.Sprintf("name = \"*\"\nmode = \"launch\"\nsocket = %q\nmax_connections = 1", sock)
	if err := r.writeConfig(svc); err != nil {
		return "", err
	}
	if err := r.start(ctx, sock); err != nil {
		return "", err
	}
	held, err := holdUnderCap(sock)
	if err != nil {
		return "", err
	}
	defer held.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for range overCapClients {
		wg.Go(func() {
			k := silentClient(sock)
			mu.Lock()
			got[k]++
			mu.Unlock()
		})
	}
	wg.Wait()
	refused := 0
	for k, n := range got {
		if !strings.HasPrefix(k, "no-frame") && k != "dial-error" {
			refused += n
		}
	}
	return fmt.Sprintf("refusal_frames=%d clients=%d outcomes=%s", refused, overCapClients, counts(got)), nil
}

// holdUnderCap opens the one connection the cap allows. The start-up check's connection
// may still count for a moment, and the first one would then be refused: a connection
// is held once the broker has said nothing on it for 500 ms (it waits for its Hello).
func holdUnderCap(sock string) (net.Conn, error) {
	var last string
	for range 5 {
		c, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", sock, err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.SetReadDeadline(time.Time{})
			return c, nil
		}
		c.Close()
		last = fmt.Sprintf("%v", err)
	}
	return nil, fmt.Errorf("no connection under the cap of 1 on %s after 5 tries (last: %s)", sock, last)
}

// silentClient connects, writes nothing and reads one frame within 3 s: it returns the
// refusal code read, "no-frame-timeout", "no-frame-closed" or "dial-error".
func silentClient(sock string) string {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "dial-error"
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	f, err := wire.ReadFrame(c, wire.MaxFrameBody)
	if err != nil {
		// A timeout means the broker kept the connection open without a word (it took
		// it as one under the cap, waiting for a Hello); anything else, it closed it.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "no-frame-timeout"
		}
		return "no-frame-closed"
	}
	var hr wirepb.HelloReply
	if err := proto.Unmarshal(f.GetPayload(), &hr); err != nil {
		return "undecodable-frame"
	}
	if ref := hr.GetRefused(); ref != nil {
		return codeName(ref.GetCode())
	}
	return "other-frame"
}
