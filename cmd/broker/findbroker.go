package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The CLI finds a running broker from what the kernel knows, not from the config file:
// the file may already name sockets the broker has not bound (a reload that moves every
// socket), and a state file the broker writes could be stale. /proc gives the processes
// of this user that run `broker -c FILE` for the same FILE, and the Unix sockets each of
// them is listening on now.

// canonicalPath makes a config path comparable: absolute (against dir when relative),
// symlinks resolved where the file exists.
func canonicalPath(dir, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// runConfigArg returns the config path of a `broker -c FILE` or `broker run -c FILE`
// command line (argv without argv[0]), as dispatch would read it.
func runConfigArg(args []string) (string, bool) {
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	} else if len(args) == 0 || !strings.HasPrefix(args[0], "-c") && !strings.HasPrefix(args[0], "--config") && !strings.HasPrefix(args[0], "-config") {
		return "", false
	}
	for i, a := range args {
		switch {
		case a == "--":
			return "", false
		case (a == "-c" || a == "--c" || a == "-config" || a == "--config") && i+1 < len(args):
			return args[i+1], true
		}
		for _, p := range []string{"-c=", "--c=", "-config=", "--config="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				return v, true
			}
		}
	}
	return "", false
}

// brokersFor lists the pids of this user's processes that run a broker on cfgPath.
func brokersFor(cfgPath string) ([]int, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("find the broker: %w", err)
	}
	want := canonicalPath(cwd, cfgPath)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("find the broker: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or not ours to read
		}
		argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		p, ok := runConfigArg(argv[1:])
		if !ok {
			continue
		}
		dir, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue // another user's process
		}
		if canonicalPath(dir, p) == want {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// listeningSockets returns the paths of the Unix sockets pid is listening on.
func listeningSockets(pid int) ([]string, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, fmt.Errorf("sockets of pid %d: %w", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
	if err != nil {
		return nil, fmt.Errorf("sockets of pid %d: %w", pid, err)
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // header: Num RefCount Protocol Flags Type St Inode Path
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// Flags 00010000 is __SO_ACCEPTCON: a listening socket. Abstract names start with @.
		if len(f) == 8 && f[3] == "00010000" && inodes[f[6]] && strings.HasPrefix(f[7], "/") {
			paths = append(paths, f[7])
		}
	}
	return paths, sc.Err()
}
