package browsertest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/chromedp/chromedp"
)

// Screenshot saves the whole page (not just the window) as
// $PC2_ARTIFACTS/screenshots/<test name>/<name>.png, logs and returns the
// path. PC2_ARTIFACTS defaults to the repository's artifacts/ directory.
// A later run of the same test overwrites it.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	p, err := b.screenshot(name)
	if err != nil {
		b.t.Fatalf("browsertest: screenshot %s: %v", name, err)
	}
	b.t.Logf("browsertest: screenshot %s", p)
	return p
}

func (b *Browser) screenshot(name string) (string, error) {
	dir, err := ArtifactsDir()
	if err != nil {
		return "", err
	}
	dir = filepath.Join(dir, "screenshots", safePath(b.t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.stepTimeout)
	defer cancel()
	// Quality 100 is what makes chromedp ask for PNG.
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, safeName(strings.TrimSuffix(name, ".png"))+".png")
	return p, os.WriteFile(p, png, 0o644)
}

var errNoRoot = errors.New("no go.mod above the working directory; set PC2_ARTIFACTS")

// ArtifactsDir is where tests leave files for a person to look at:
// $PC2_ARTIFACTS, or artifacts/ in the repository root (the directory
// above the working directory holding go.mod).
func ArtifactsDir() (string, error) {
	if d := os.Getenv("PC2_ARTIFACTS"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "artifacts"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errNoRoot
		}
		dir = parent
	}
}

// safePath keeps a subtest's name as nested directories, each made safe.
func safePath(testName string) string {
	parts := strings.Split(testName, "/")
	for i, p := range parts {
		parts[i] = safeName(p)
	}
	return filepath.Join(parts...)
}

// safeName maps a name to one a file system and a shell take without
// quoting.
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
	if strings.Trim(s, ".") == "" { // "", "." and ".." are not names
		s = "_" + s
	}
	return s
}
