package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memKB reads VmRSS and VmData of pid from /proc.
func memKB(pid int) (mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	var m mem
	found := 0
	for line := range strings.Lines(string(b)) {
		key, rest, _ := strings.Cut(line, ":")
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.rss
		case "VmData":
			dst = &m.data
		default:
			continue
		}
		if f := strings.Fields(rest); len(f) > 0 {
			if *dst, err = strconv.ParseInt(f[0], 10, 64); err == nil {
				found++
			}
		}
	}
	if found != 2 {
		return mem{}, fmt.Errorf("pid %d: no VmRSS/VmData in /proc status", pid)
	}
	return m, nil
}

// children lists the child pids of pid, across all its threads.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// reaped reports whether pid is gone from /proc: it exited and its parent waited for it.
func reaped(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err != nil
}

// openFDs counts the descriptors pid has open.
func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}
