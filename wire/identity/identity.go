// Package identity implements the v1 backend identity probe (payload protocol 0xB232):
// what a backend reports about itself, what the broker expects for a process, the probe
// exchange with its checks, and the lighter connect-only check.
package identity

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rpbroker/broker/wire/wirepb"
)

// HashAlgorithm is the only exe_hash_algorithm v1 accepts.
const HashAlgorithm = "blake3"

// bootIDPath holds the kernel's per-boot random id.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// deletedSuffix is what the kernel appends to the exe link of an unlinked binary.
const deletedSuffix = " (deleted)"

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat start times; it is 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// BootID returns the kernel boot id, trimmed.
func BootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("boot id: %s is empty", bootIDPath)
	}
	return id, nil
}

// Self is the identity this process reports in a probe answer, without hash caching.
func Self(endpoint string) (*wirepb.DaemonProcess, error) {
	return (*Hasher)(nil).Self(endpoint)
}

// OfPID is the identity the broker expects for pid, without hash caching.
func OfPID(pid int, endpoint string) (*wirepb.DaemonProcess, error) {
	return (*Hasher)(nil).OfPID(pid, endpoint)
}

// Self is the identity this process reports in a probe answer for endpoint.
func (h *Hasher) Self(endpoint string) (*wirepb.DaemonProcess, error) {
	p, err := h.describe("self", endpoint)
	if err != nil {
		return nil, fmt.Errorf("identity of self: %w", err)
	}
	p.Pid = uint32(os.Getpid())
	return p, nil
}

// OfPID is the identity the broker expects for the process pid serving endpoint. The hash
// is read through /proc/<pid>/exe, so a binary replaced on disk still hashes the image that
// is running, exactly as the process itself reports it.
func (h *Hasher) OfPID(pid int, endpoint string) (*wirepb.DaemonProcess, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("identity of pid %d: not a process id", pid)
	}
	p, err := h.describe(strconv.Itoa(pid), endpoint)
	if err != nil {
		return nil, fmt.Errorf("identity of pid %d: %w", pid, err)
	}
	p.Pid = uint32(pid)
	return p, nil
}

// describe fills everything but the pid from /proc/<proc>/. The kernel's exe link is
// already a canonical path (realpath). When the binary was replaced on disk the kernel
// appends " (deleted)"; that suffix is dropped so a backend that described itself before
// the replacement still matches the path it was started from (the hash, read through the
// link, still pins the running image).
func (h *Hasher) describe(proc, endpoint string) (*wirepb.DaemonProcess, error) {
	exe := "/proc/" + proc + "/exe"
	path, err := os.Readlink(exe)
	if err != nil {
		return nil, fmt.Errorf("exe path: %w", err)
	}
	path = strings.TrimSuffix(path, deletedSuffix)
	sum, err := h.HashFile(exe)
	if err != nil {
		return nil, fmt.Errorf("exe hash: %w", err)
	}
	boot, err := BootID()
	if err != nil {
		return nil, err
	}
	started, err := startedAtMS(proc)
	if err != nil {
		return nil, err
	}
	return &wirepb.DaemonProcess{
		ExePath:          path,
		IpcEndpoint:      &wirepb.Endpoint{Path: endpoint},
		StartedAtUnixMs:  started,
		BootId:           boot,
		ExeHashAlgorithm: HashAlgorithm,
		ExeHash:          sum[:],
	}, nil
}

// startedAtMS derives the process start time from its start tick and the boot time, so the
// broker and the backend compute the same value.
func startedAtMS(proc string) (uint64, error) {
	stat, err := os.ReadFile("/proc/" + proc + "/stat")
	if err != nil {
		return 0, fmt.Errorf("start time: %w", err)
	}
	// comm (field 2) may contain spaces and parentheses: split after the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, fmt.Errorf("start time: malformed /proc/%s/stat", proc)
	}
	fields := strings.Fields(string(stat[i+1:]))
	const startField = 22 - 3 // field 22 overall, counted from field 3 (state)
	if len(fields) <= startField {
		return 0, fmt.Errorf("start time: short /proc/%s/stat", proc)
	}
	ticks, err := strconv.ParseUint(fields[startField], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time: %w", err)
	}
	btime, err := bootTime()
	if err != nil {
		return 0, err
	}
	return btime*1000 + ticks*1000/clockTicks, nil
}

func bootTime() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("boot time: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("boot time: %w", err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("boot time: no btime in /proc/stat")
}
