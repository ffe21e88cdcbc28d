package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rpbroker/broker/supervisor/serve"
)

// socketCheckEvery is how often a serving runner checks that its socket file is still the
// one it listens on.
const socketCheckEvery = 2 * time.Second

// errSocketGone is a control socket file removed (or replaced) while its loop served.
var errSocketGone = errors.New("control socket file removed")

// runWatched runs loop on ln until ctx ends, and stops it with errSocketGone when path no
// longer names the socket ln listens on (rm of the file, or another file put there): a
// client could no longer reach the service, so the runner binds the path again. Nothing
// is unlinked then: the path is gone or belongs to someone else. Connections the old loop
// holds finish first (Loop.Run waits for them).
func runWatched(ctx context.Context, loop *serve.Loop, ln *net.UnixListener, path string, every time.Duration) error {
	ino, err := inodeOf(path)
	if err != nil {
		return loop.Run(ctx) // cannot tell; serve unwatched rather than not at all
	}
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	var gone error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-t.C:
			}
			now, err := inodeOf(path)
			if err == nil && now == ino {
				continue
			}
			if err == nil {
				err = fmt.Errorf("%s is now another file (inode %d, was %d)", path, now, ino)
			}
			// Before the cancel that closes ln: the cancel orders this write before Close.
			ln.SetUnlinkOnClose(false)
			gone = fmt.Errorf("%w: %w", errSocketGone, err)
			stop()
			return
		}
	}()
	err = loop.Run(loopCtx)
	stop()
	wg.Wait()
	if gone != nil && ctx.Err() == nil {
		return gone
	}
	return err
}

func inodeOf(path string) (uint64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return st.Ino, nil
}
