package main

import (
	"context"
	"fmt"
	"net"
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
	held, err := dialHold(sock, 1, nil)
	defer closeAll(held)
	if err != nil {
		return "", err
	}
	// The broker counts the held connection once it accepted it, which it does before the
	// ones queued behind it: the listen backlog is FIFO.
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
		if k != "no-frame" && k != "dial-error" {
			refused += n
		}
	}
	return fmt.Sprintf("refusal_frames=%d clients=%d outcomes=%s", refused, overCapClients, counts(got)), nil
}

// silentClient connects, writes nothing and reads one frame within 3 s: it returns the
// refusal code read, "no-frame" or "dial-error".
func silentClient(sock string) string {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "dial-error"
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	f, err := wire.ReadFrame(c, wire.MaxFrameBody)
	if err != nil {
		return "no-frame"
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
