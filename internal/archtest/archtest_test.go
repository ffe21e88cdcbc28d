// Package archtest holds the tests that keep the house in shape: the import boundaries of
// docs/architecture.md ("Boundaries") and the documents code comments cite.
package archtest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/rpbroker/broker"

// root is the repository root: this package lives two levels below it.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// deps lists the packages pattern's packages depend on, themselves included.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pattern)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		m[f[0]] = f[1:]
	}
	return m
}

func TestArchitecture(t *testing.T) {
	cases := []struct {
		pattern   string
		forbidden []string // import path prefixes no package in the build may have
	}{
		{"./client/...", []string{module + "/supervisor", module + "/config", module + "/servicedef", "github.com/rs/zerolog"}},
		{"./sdk/...", []string{module + "/supervisor", module + "/config", module + "/servicedef", "github.com/rs/zerolog"}},
		{"./wire/...", []string{module + "/supervisor", module + "/config", module + "/servicedef", module + "/client", module + "/sdk", "github.com/rs/zerolog"}},
		{"./config/...", []string{module + "/supervisor"}},
		{"./servicedef/...", []string{module + "/supervisor"}},
	}
	for _, c := range cases {
		t.Run(c.pattern, func(t *testing.T) {
			for pkg, imports := range deps(t, c.pattern) {
				for _, bad := range c.forbidden {
					if pkg == bad || strings.HasPrefix(pkg, bad+"/") {
						t.Errorf("%s builds %s (imported by one of: %v)", c.pattern, pkg, importers(deps(t, c.pattern), pkg))
					}
				}
				_ = imports
			}
		})
	}
}

// importers names the packages of m that import pkg, to make a failure actionable.
func importers(m map[string][]string, pkg string) []string {
	var out []string
	for p, imports := range m {
		for _, i := range imports {
			if i == pkg {
				out = append(out, p)
			}
		}
	}
	return out
}

func TestTopLevelDirectories(t *testing.T) {
	entries, err := os.ReadDir(root(t))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) > 11 {
		t.Errorf("%d top-level directories, at most 11 (docs/architecture.md): %v", len(dirs), dirs)
	}
}

// mdRef finds a document named in a comment: docs/operations.md, README.md, ...
var mdRef = regexp.MustCompile(`[\w./-]*\w\.md\b`)

// TestCommentsCiteDocsThatExist fails when a Go comment names a .md file that is not in
// the repository (a spec that lives elsewhere, a renamed doc).
func TestCommentsCiteDocsThatExist(t *testing.T) {
	top := root(t)
	err := filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != top {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			i := strings.Index(line, "//")
			if i < 0 {
				continue
			}
			for _, ref := range mdRef.FindAllString(line[i:], -1) {
				if !docExists(top, filepath.Dir(path), ref) {
					rel, _ := filepath.Rel(top, path)
					t.Errorf("%s:%d cites %s, which is not in the repository", rel, n, ref)
				}
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// docExists resolves ref against the repository root, docs/ and the citing file's dir.
func docExists(top, dir, ref string) bool {
	for _, base := range []string{top, filepath.Join(top, "docs"), dir} {
		if _, err := os.Stat(filepath.Join(base, ref)); err == nil {
			return true
		}
	}
	return false
}
