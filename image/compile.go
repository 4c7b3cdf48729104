package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// program is one cross-compiled program and where it goes in the root.
type program struct {
	rootPath string // e.g. /gokrazy/init, /user/hello
	file     string // on the host
}

// compile cross-compiles the init, gokrazy's services and opts.Programs.
//
// One `go build -o dir/ pkg...` builds them all, so the go command compiles
// and links in parallel (the programs share most packages). Flags, for
// reproducibility: CGO_ENABLED=0 (static, no host C toolchain in the
// output), -trimpath (no host paths), -buildvcs=false (a dirty work tree or
// a new commit must not change the bytes when the sources did not), and the
// build timestamp from SOURCE_DATE_EPOCH via -X. For size: -s -w (no
// symbol table, no DWARF: a third of each binary; panics still print
// function names and lines, which live in the pclntab).
func compile(ctx context.Context, opts Options, dir string) ([]program, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	targets := []struct{ rootPath, pkg string }{{"/gokrazy/init", InitPackage}}
	for _, name := range sortedKeys(GokrazyServices) {
		targets = append(targets, struct{ rootPath, pkg string }{"/gokrazy/" + name, GokrazyServices[name]})
	}
	for _, name := range sortedKeys(opts.Programs) {
		targets = append(targets, struct{ rootPath, pkg string }{"/user/" + name, opts.Programs[name]})
	}
	// go build -o DIR/ names each binary after its package's last path
	// element, so the same package serves two names with one build and
	// two packages must not share a last element.
	byBase := map[string]string{}
	var pkgs []string
	for _, t := range targets {
		base := path.Base(t.pkg)
		if other, ok := byBase[base]; ok && other != t.pkg {
			return nil, fmt.Errorf("%w: packages %s and %s both build a binary named %s", ErrInvalidOptions, other, t.pkg, base)
		} else if !ok {
			byBase[base] = t.pkg
			pkgs = append(pkgs, t.pkg)
		}
	}
	ts := time.Unix(opts.SourceDateEpoch, 0).UTC().Format(time.RFC3339)
	ldflags := "-s -w -X main.buildTimestamp=" + ts
	for _, k := range sortedKeys(opts.Vars) {
		v := opts.Vars[k]
		if strings.ContainsAny(k+v, " \t\n'\"") {
			return nil, fmt.Errorf("%w: link-time variable %s=%q may not contain spaces or quotes", ErrInvalidOptions, k, v)
		}
		ldflags += " -X " + k + "=" + v
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator), "-trimpath", "-buildvcs=false",
		"-ldflags", ldflags}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = opts.ModuleDir
	cmd.Env = append(os.Environ(),
		"GOOS=linux", "GOARCH="+opts.Board.GOARCH, "CGO_ENABLED=0",
		"SOURCE_DATE_EPOCH="+fmt.Sprint(opts.SourceDateEpoch))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, stderr.Bytes())
	}
	var bins []program
	for _, t := range targets {
		bins = append(bins, program{rootPath: t.rootPath, file: filepath.Join(dir, path.Base(t.pkg))})
	}
	for _, name := range sortedKeys(opts.External) {
		file := filepath.Join(dir, "external-"+name)
		if err := buildExternal(ctx, opts, opts.External[name], file); err != nil {
			return nil, err
		}
		bins = append(bins, program{rootPath: "/user/" + name, file: file})
	}
	return bins, nil
}

// buildExternal builds e into file: `go mod download` of the pinned
// version, then `go build` inside the downloaded module, with the same
// reproducibility and size flags as our programs.
func buildExternal(ctx context.Context, opts Options, e External, file string) error {
	what := e.Module + "@" + e.Version
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0",
		"GOOS=linux", "GOARCH="+opts.Board.GOARCH, "SOURCE_DATE_EPOCH="+fmt.Sprint(opts.SourceDateEpoch))
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", what)
	dl.Dir, dl.Env = os.TempDir(), env // not inside a module
	var stderr bytes.Buffer
	dl.Stderr = &stderr
	out, err := dl.Output()
	var m struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &m); err != nil || jerr != nil || m.Dir == "" {
		return fmt.Errorf("go mod download %s: %v %s%s", what, err, m.Error, stderr.Bytes())
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", file, "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "./"+e.Package)
	build.Dir, build.Env = m.Dir, env
	stderr.Reset()
	build.Stderr = &stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build %s/%s: %w\n%s", what, e.Package, err, stderr.Bytes())
	}
	return nil
}

// moduleDir returns the module cache directory of module at the version
// go.mod (in dir) requires.
func moduleDir(ctx context.Context, dir, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-json", module)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w\n%s", module, err, stderr.Bytes())
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	if m.Dir == "" {
		// Required but not downloaded yet.
		dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
		dl.Dir = dir
		out, err := dl.Output()
		if err != nil {
			return "", fmt.Errorf("go mod download %s: %w", module, err)
		}
		if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
			return "", fmt.Errorf("go mod download %s: no directory", module)
		}
	}
	return m.Dir, nil
}
