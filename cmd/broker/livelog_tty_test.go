package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns both ends of a new pseudo-terminal: a real terminal for isTerminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestLiveLogColourOnlyOnATerminal: auto picks text on a terminal, coloured unless
// NO_COLOR is set (to anything but the empty string); the same text into a pipe or a
// file has no escape codes (TestRunLogOutput runs the binary into a pipe).
func TestLiveLogColourOnlyOnATerminal(t *testing.T) {
	for _, tc := range []struct {
		noColor string
		colour  bool
	}{
		{noColor: "", colour: true},
		{noColor: "1", colour: false},
	} {
		t.Run("NO_COLOR="+tc.noColor, func(t *testing.T) {
			t.Setenv("NO_COLOR", tc.noColor)
			master, slave := openPTY(t)
			live := newLiveLog(slave, "auto", "info")
			log := live.logger()
			log.Warn().Str("service", "zc").Msg("on a terminal")
			buf := make([]byte, 4096)
			n, err := master.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			out := string(buf[:n])
			if !strings.Contains(out, "on a terminal") || strings.HasPrefix(out, "{") {
				t.Fatalf("want a text line on a terminal, got %q", out)
			}
			if got := strings.Contains(out, "\x1b["); got != tc.colour {
				t.Fatalf("colour codes present: %v, want %v: %q", got, tc.colour, out)
			}
		})
	}
}
