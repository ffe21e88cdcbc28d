package registry

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Proc watches one process through a pidfd, so a recycled pid can never pass for the
// process we verified.
type Proc struct {
	pid    int
	exited atomic.Bool // seen exited (or closed): final, answered without a system call

	mu sync.RWMutex // Close waits for polls in progress: the fd number is never reused under one
	fd int          // -1 once closed
}

// WatchPID opens a pidfd for pid. The process must exist now.
func WatchPID(pid int) (*Proc, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return &Proc{pid: pid, fd: fd}, nil
}

// PID is the watched pid.
func (p *Proc) PID() int { return p.pid }

// Exited reports, without blocking, whether the process has exited. A closed Proc
// reports exited.
func (p *Proc) Exited() bool { return p.Wait(0) }

// Wait blocks up to timeoutMS (-1 forever) and reports whether the process exited.
func (p *Proc) Wait(timeoutMS int) bool {
	if p.exited.Load() {
		return true
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.fd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeoutMS)
		if err == unix.EINTR {
			continue
		}
		if err == nil && n > 0 {
			p.exited.Store(true)
			return true
		}
		return false
	}
}

// Close releases the pidfd, once no poll is using it.
func (p *Proc) Close() error {
	p.exited.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}
