// Package deptest checks the shape of the module's import graph: the layer
// rule (which top-level folders may import which) and what a program may
// link, as tailscale's deptest does for its daemons.
//
// The rule, bottom to top; a package may import its own layer and those
// below it, never one above:
//
//	0  internal/ (but internal/testing/), provisioning/, boards/
//	1  services/, image/
//	2  appliance/
//	3  cmd/
//
// Test support (internal/testing/, e2e/, qemu-tests/) stands beside the
// layers: it may import any of them, and only tests (_test.go files) and
// other test support may import it, so no product binary links a test
// helper.
package deptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Module is the module path every project import starts with.
const Module = "github.com/pc2/pc2"

// Package is one package of the module as `go list` sees it.
type Package struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
}

// Rel is p's path inside the module ("services/relay").
func Rel(p string) string {
	if p == Module {
		return ""
	}
	return strings.TrimPrefix(p, Module+"/")
}

// testSupport reports whether rel is test support.
func testSupport(rel string) bool {
	for _, pre := range []string{"internal/testing", "e2e", "qemu-tests"} {
		if rel == pre || strings.HasPrefix(rel, pre+"/") {
			return true
		}
	}
	return false
}

// Layer returns rel's layer (0-3), or -1 for test support. An unknown
// top-level folder is an error: a new folder needs a place in the rule.
func Layer(rel string) (int, error) {
	if testSupport(rel) {
		return -1, nil
	}
	top, _, _ := strings.Cut(rel, "/")
	switch top {
	case "internal", "provisioning", "boards":
		return 0, nil
	case "services", "image":
		return 1, nil
	case "appliance":
		return 2, nil
	case "cmd":
		return 3, nil
	}
	return 0, fmt.Errorf("deptest: top-level folder %q of %s has no layer; add it to the rule in internal/testing/deptest", top, rel)
}

// Violations returns one line per import of pkgs that breaks the rule.
func Violations(pkgs []Package) []string {
	var bad []string
	for _, p := range pkgs {
		from := Rel(p.ImportPath)
		fl, err := Layer(from)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		check := func(imps []string, test bool) {
			for _, imp := range imps {
				if imp != Module && !strings.HasPrefix(imp, Module+"/") {
					continue
				}
				to := Rel(imp)
				tl, err := Layer(to)
				switch {
				case err != nil:
					bad = append(bad, err.Error())
				case tl == -1 && fl != -1 && !test:
					bad = append(bad, fmt.Sprintf("%s imports test support %s", from, to))
				case fl >= 0 && tl > fl && !test:
					bad = append(bad, fmt.Sprintf("%s (layer %d) imports %s (layer %d): upward", from, fl, to, tl))
				}
			}
		}
		check(p.Imports, false)
		check(p.TestImports, true)
		check(p.XTestImports, true)
	}
	sort.Strings(bad)
	return slices.Compact(bad)
}

// List runs `go list -json` on patterns in the module's root.
func List(tb testing.TB, patterns ...string) []Package {
	tb.Helper()
	args := append([]string{"list", "-json=ImportPath,Imports,TestImports,XTestImports,Deps"}, patterns...)
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = moduleRoot(tb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("go list %v: %v\n%s", patterns, err, stderr.String())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p Package
		if err := dec.Decode(&p); err != nil {
			tb.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// goTool is the go command: on PATH, or where the Makefile installs Go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// moduleRoot is the folder of go.mod, found from this source file.
func moduleRoot(tb testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("deptest: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Forbidden returns the dependencies of pkg (a `go list` pattern such as
// "./cmd/pc2-init") that match any of bad: an import path, or a prefix
// ending in "/" that matches everything below it.
func Forbidden(tb testing.TB, pkg string, bad []string) []string {
	tb.Helper()
	pkgs := List(tb, pkg)
	if len(pkgs) != 1 {
		tb.Fatalf("go list %s: %d packages, want 1", pkg, len(pkgs))
	}
	var hits []string
	for _, d := range append(pkgs[0].Deps, pkgs[0].Imports...) {
		for _, b := range bad {
			if d == b || strings.HasSuffix(b, "/") && strings.HasPrefix(d, b) {
				hits = append(hits, d)
				break
			}
		}
	}
	sort.Strings(hits)
	return slices.Compact(hits)
}
