package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// program is one cross-compiled program and where it goes in the root.
type program struct {
	rootPath string // e.g. /gokrazy/init, /user/hello
	file     string // on the host
}

// compile cross-compiles the init, gokrazy's services and opts.Programs.
//
// Flags, for reproducibility: CGO_ENABLED=0 (static, no host C toolchain in
// the output), -trimpath (no host paths), -buildvcs=false (a dirty work tree
// or a new commit must not change the bytes when the sources did not), and
// the build timestamp from SOURCE_DATE_EPOCH via -X.
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
	ts := time.Unix(opts.SourceDateEpoch, 0).UTC().Format(time.RFC3339)
	var bins []program
	for i, t := range targets {
		out := filepath.Join(dir, fmt.Sprintf("%02d-%s", i, filepath.Base(t.rootPath)))
		cmd := exec.CommandContext(ctx, "go", "build",
			"-o", out, "-trimpath", "-buildvcs=false",
			"-ldflags", "-X main.buildTimestamp="+ts,
			t.pkg)
		cmd.Dir = opts.ModuleDir
		cmd.Env = append(os.Environ(),
			"GOOS=linux", "GOARCH="+opts.Board.GOARCH, "CGO_ENABLED=0",
			"SOURCE_DATE_EPOCH="+fmt.Sprint(opts.SourceDateEpoch))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("build %s: %w\n%s", t.pkg, err, stderr.Bytes())
		}
		bins = append(bins, program{rootPath: t.rootPath, file: out})
	}
	return bins, nil
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
