package testutil

import (
	"bufio"
	"io"
	"os/exec"
	"testing"
)

// StartPiped starts cmd with its stdin and stdout piped to the test and its stderr
// collected, and kills and reaps it when the test ends: the shape of a helper process a
// test talks to line by line.
func StartPiped(t testing.TB, cmd *exec.Cmd) (stdin io.WriteCloser, stdout *bufio.Reader, stderr *SyncBuffer) {
	t.Helper()
	stderr = &SyncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return stdin, bufio.NewReader(out), stderr
}
