package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// runCLI runs the built broker (this test binary in its broker role) to completion.
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), envRunBroker+"=1"), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run broker %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// commandPaths lists every runnable command line of the table: "run", "servicedef
// encode", …, and the groups themselves.
func commandPaths() [][]string {
	var out [][]string
	var walk func(prefix []string, cmds []command)
	walk = func(prefix []string, cmds []command) {
		for _, c := range cmds {
			p := append(slices.Clone(prefix), c.name)
			out = append(out, p)
			if c.sub != nil {
				walk(p, c.sub())
			}
		}
	}
	walk(nil, commands())
	return out
}

// TestHelpOnStdoutOnceAndExtraArgsRejected: for every command, `broker help CMD` and
// `broker CMD --help` print the same usage once on stdout, nothing on stderr, exit 0; one
// positional argument too many is a one-line usage error on stderr, exit 2, before the
// command does anything.
func TestHelpOnStdoutOnceAndExtraArgsRejected(t *testing.T) {
	paths := commandPaths()
	if len(paths) < 12 {
		t.Fatalf("the table lists %d command lines; want every command", len(paths))
	}
	for _, path := range paths {
		name := strings.Join(path, " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := lookup(t, path)
			helpOut, helpErr, code := runCLI(t, nil, append([]string{"help"}, path...)...)
			if code != 0 || helpErr != "" || strings.Count(helpOut, "usage: broker") != 1 ||
				!strings.HasPrefix(helpOut, "usage: broker") {
				t.Fatalf("help %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, code, helpOut, helpErr)
			}
			if c.run != nil && !strings.HasPrefix(helpOut, "usage: broker "+name+" ") {
				t.Errorf("help %s names another command:\n%s", name, helpOut)
			}
			// `broker help --help` would ask about a command named --help.
			if name != "help" {
				out, errOut, code := runCLI(t, nil, append(slices.Clone(path), "--help")...)
				if code != 0 || errOut != "" || out != helpOut {
					t.Errorf("%s --help: exit %d, stdout differs from `broker help %s`: %v\nstdout:\n%s\nstderr:\n%s",
						name, code, name, out != helpOut, out, errOut)
				}
			}
			if c.maxArgs < 0 && name != "help" {
				return // takes any number of arguments
			}
			extra := slices.Clone(path)
			for range c.maxArgs + 1 {
				extra = append(extra, "bash") // a valid shell, verb-like word: only the count is wrong
			}
			if name == "help" {
				extra = []string{"help", "reload", "extra"}
			}
			out, errOut, code := runCLI(t, nil, extra...)
			if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "broker ") {
				t.Errorf("%v: exit %d; want exit 2 and a one-line usage error\nstdout:\n%s\nstderr:\n%s", extra, code, out, errOut)
			}
			if c.sub == nil && !strings.Contains(errOut, "unexpected argument") {
				t.Errorf("%v: %q does not say what is wrong", extra, errOut)
			}
		})
	}
}

func lookup(t *testing.T, path []string) *command {
	cmds := commands()
	var c *command
	for _, p := range path {
		if c = findCommand(cmds, p); c == nil {
			t.Fatalf("no command %v", path)
		}
		if c.sub != nil {
			cmds = c.sub()
		}
	}
	return c
}

func TestTopLevelUsageAndErrors(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // prefix
		stderrLine string // substring of a one-line stderr; "" means stderr is empty
	}{
		{[]string{"--help"}, 0, "usage: broker -c FILE | broker COMMAND", ""},
		{[]string{"-h"}, 0, "usage: broker -c FILE | broker COMMAND", ""},
		{[]string{"help"}, 0, "usage: broker -c FILE | broker COMMAND", ""},
		{[]string{"nope"}, 2, "", `unknown command "nope"`},
		{[]string{"help", "nope"}, 2, "", `unknown command "nope"`},
		{[]string{"reload", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"servicedef", "nope"}, 2, "", `unknown subcommand "nope"`},
		{[]string{"-c", "x.toml", "extra"}, 2, "", `broker run: unexpected argument "extra"`},
		{[]string{"completion", "tcsh"}, 2, "", "want one shell: bash, zsh, fish"},
	} {
		out, errOut, code := runCLI(t, nil, tc.args...)
		bad := code != tc.code || !strings.HasPrefix(out, tc.stdout) || (tc.stdout == "") != (out == "")
		if tc.stderrLine == "" {
			bad = bad || errOut != ""
		} else {
			bad = bad || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.stderrLine)
		}
		if bad {
			t.Errorf("broker %v: exit %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, out, errOut)
		}
	}
	// No arguments is a usage error: the usage goes to stderr.
	if out, errOut, code := runCLI(t, nil); code != 2 || out != "" || !strings.HasPrefix(errOut, "usage: broker") {
		t.Errorf("broker: exit %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestVersion(t *testing.T) {
	long, errOut, code := runCLI(t, nil, "--version")
	if code != 0 || errOut != "" || !strings.HasPrefix(long, "broker ") || !strings.Contains(long, "protocol: running-process broker v1") {
		t.Fatalf("--version: exit %d %q %q", code, long, errOut)
	}
	if out, _, _ := runCLI(t, nil, "version"); out != long {
		t.Errorf("version %q differs from --version %q", out, long)
	}
	out, errOut, code := runCLI(t, nil, "version", "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 || errOut != "" {
		t.Fatalf("version --json: exit %d %v\n%s%s", code, err, out, errOut)
	}
	want := currentVersion()
	for k, val := range map[string]any{"protocol": "running-process broker v1", "protocol_version": 1.0,
		"framing_version": 1.0, "envelope_version": 1.0, "go_version": want.GoVersion, "version": want.Version} {
		if v[k] != val {
			t.Errorf("version --json %s = %v, want %v", k, v[k], val)
		}
	}
	// The revision comes from the build info when the binary has one.
	var stdout, stderr bytes.Buffer
	runVersion(context.Background(), []string{"--json"}, &stdout, &stderr)
	if want.VCSRevision != "" && !strings.Contains(stdout.String(), want.VCSRevision) {
		t.Errorf("version --json lacks the vcs revision %s: %s", want.VCSRevision, stdout.String())
	}
}

// TestCompletionScripts: each script parses in its shell (bash always; zsh and fish when
// installed, else their content is checked), and the bash one completes commands, admin
// verbs, subcommands and the flags each command really declares.
func TestCompletionScripts(t *testing.T) {
	scripts := map[string]string{}
	for _, sh := range completionShells {
		out, errOut, code := runCLI(t, nil, "completion", sh)
		if code != 0 || errOut != "" || out == "" {
			t.Fatalf("completion %s: exit %d stderr %q", sh, code, errOut)
		}
		scripts[sh] = out
	}
	dir := t.TempDir()
	for sh, check := range map[string][]string{"bash": {"-n"}, "zsh": {"-n"}, "fish": {"--no-execute"}} {
		file := dir + "/broker." + sh
		if err := os.WriteFile(file, []byte(scripts[sh]), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath(sh); err != nil {
			if sh == "bash" {
				t.Fatalf("bash is needed: %v", err)
			}
			t.Logf("%s not installed: checking the script's content instead", sh)
			continue
		}
		if out, err := exec.Command(sh, append(check, file)...).CombinedOutput(); err != nil {
			t.Errorf("%s %v: %v\n%s\n%s", sh, check, err, out, scripts[sh])
		}
	}
	// Every command, subcommand, admin verb and flag of the table appears in each script.
	for _, n := range completionTree(context.Background()) {
		for _, sh := range completionShells {
			for _, w := range n.words {
				if !strings.Contains(scripts[sh], w) {
					t.Errorf("%s script lacks %q (under %q)", sh, w, n.path)
				}
			}
			for _, f := range n.flags {
				if !strings.Contains(scripts[sh], f.name) {
					t.Errorf("%s script lacks flag %s of %q", sh, f.name, n.path)
				}
			}
		}
	}
	for _, want := range []string{"#compdef broker", "compdef _broker broker"} {
		if !strings.Contains(scripts["zsh"], want) {
			t.Errorf("zsh script lacks %q", want)
		}
	}
	if !strings.Contains(scripts["fish"], `complete -c broker -n '__broker_at \'admin\'' -l json`) {
		t.Errorf("fish script lacks admin's --json:\n%s", scripts["fish"])
	}

	for _, tc := range []struct {
		line string // the words typed; the last one is being completed
		want []string
		not  []string
	}{
		{"broker re", []string{"reload"}, []string{"run"}},
		{"broker admin st", []string{"status"}, []string{"shutdown"}},
		{"broker admin status --j", []string{"--json"}, nil},
		{"broker reload --", []string{"--socket", "--timeout", "--help"}, []string{"--json"}},
		{"broker servicedef e", []string{"encode"}, nil},
		{"broker servicedef install --b", []string{"--binary-path"}, nil},
		{"broker -c x.toml --", []string{"--config", "--help"}, nil},
		{"broker check -", []string{"-c", "--config"}, nil},
		{"broker completion ", []string{"bash", "zsh", "fish"}, nil},
		{"broker help ser", []string{"servicedef"}, nil},
	} {
		words := strings.Split(tc.line, " ")
		script := scripts["bash"] + "\nCOMP_WORDS=(" + quoteWords(words) + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_broker\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		got := strings.Fields(string(out))
		if err != nil {
			t.Fatalf("%q: %v\n%s", tc.line, err, out)
		}
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q completes to %v; want %s among them", tc.line, got, w)
			}
		}
		for _, w := range tc.not {
			if slices.Contains(got, w) {
				t.Errorf("%q completes to %v; %s does not fit", tc.line, got, w)
			}
		}
	}
}

func quoteWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + w + "'"
	}
	return strings.Join(q, " ")
}
