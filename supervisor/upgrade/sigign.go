package upgrade

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSigaction is struct sigaction as rt_sigaction takes it on linux/amd64 and arm64:
// handler, flags, restorer, mask.
type kernelSigaction struct {
	handler, flags, restorer, mask uint64
}

const sigIGN = 1

// ignoredAcrossExec lists the signals ignored from just before the execve until the new
// image asks for them (signal.Notify): an execve resets a handled signal to its default,
// which for both is to terminate, and the new image takes milliseconds to reach its
// signal.Notify. An ignored disposition survives the exec, and Go keeps an inherited
// SIG_IGN for SIGHUP until Notify; a `broker reload` or a second SIGUSR2 landing in the
// switch is lost instead of killing the broker.
func ignoredAcrossExec() [2]syscall.Signal {
	return [...]syscall.Signal{syscall.SIGHUP, syscall.SIGUSR2}
}

// ignoreForExec sets SIG_IGN on ignoredAcrossExec, returning what to restore if
// the exec fails. It bypasses os/signal on purpose: the Go handlers are put back exactly,
// so os/signal's channels keep working after a failed exec.
func ignoreForExec() (restore func(), err error) {
	sigs := ignoredAcrossExec()
	var saved [len(sigs)]kernelSigaction
	done := 0
	restore = func() {
		for i := range done {
			_ = rtSigaction(sigs[i], &saved[i], nil)
		}
	}
	for i, sig := range sigs {
		if err := rtSigaction(sig, &kernelSigaction{handler: sigIGN}, &saved[i]); err != nil {
			restore()
			return nil, fmt.Errorf("ignore %v across the exec: %w", sig, err)
		}
		done++
	}
	return restore, nil
}

func rtSigaction(sig syscall.Signal, act, old *kernelSigaction) error {
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(act)),
		uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
