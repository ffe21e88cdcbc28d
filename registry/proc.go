package registry

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Proc watches one process through a pidfd, so a recycled pid can never pass for the
// process we verified.
type Proc struct {
	pid int
	fd  int
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

// Exited reports, without blocking, whether the process has exited.
func (p *Proc) Exited() bool { return p.Wait(0) }

// Wait blocks up to timeoutMS (-1 forever) and reports whether the process exited.
func (p *Proc) Wait(timeoutMS int) bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeoutMS)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// Close releases the pidfd.
func (p *Proc) Close() error { return unix.Close(p.fd) }
