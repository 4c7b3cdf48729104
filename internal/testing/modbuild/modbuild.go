// Package modbuild builds the third-party Go programs that tests and
// benchmarks run beside ours (Pebble, frp, Caddy) from the Go module proxy,
// once, into the user's cache directory. They are peers of a test, not
// dependencies of this module: nothing of them enters go.mod.
//
// A program is built as the main module in its own module directory (`go
// mod download`, then `go build`), which also works for modules with
// replace directives, where `go install pkg@version` refuses. Without a Go
// toolchain or module proxy the test is skipped, or fails under CI=true
// (testenv.SkipOrFail).
package modbuild

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// Program is a module version and the commands built from it.
type Program struct {
	// Name names the cache directory, <cache>/pc2/<Name>-<Version>.
	Name    string
	Module  string
	Version string
	// Cmds are package directories inside the module ("cmd/frps"); each
	// binary is named after its directory's last element ("." for the
	// module's root package: named "main").
	Cmds []string
	// Tags are build tags.
	Tags []string
}

// Build returns the directory holding p's binaries, building them the
// first time. Test binaries of several packages may get here at once: one
// builds under a file lock, the others wait and find the result.
func Build(tb testing.TB, p Program) string {
	tb.Helper()
	dir, err := build(tb, p)
	if err != nil {
		testenv.SkipOrFail(tb, "cannot build %s %s (Go toolchain or module proxy): %v", p.Module, p.Version, err)
	}
	return dir
}

// Bin is the path of cmd's binary in the directory Build returned.
func Bin(dir, cmd string) string {
	if path.Clean(cmd) == "." {
		return filepath.Join(dir, "main")
	}
	return filepath.Join(dir, path.Base(cmd))
}

func build(tb testing.TB, p Program) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	base := filepath.Join(cache, "pc2")
	dir := filepath.Join(base, p.Name+"-"+p.Version)
	if built(dir, p.Cmds) {
		return dir, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(base, p.Name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if built(dir, p.Cmds) {
		return dir, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	start := time.Now()
	src, err := download(goBin, p.Module+"@"+p.Version)
	if err != nil {
		return "", err
	}
	// Build into a fresh directory and rename it into place: an
	// interrupted build leaves no half cache behind.
	tmp, err := os.MkdirTemp(base, p.Name+"-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, c := range p.Cmds {
		args := []string{"build", "-trimpath", "-o", Bin(tmp, c)}
		if len(p.Tags) > 0 {
			args = append(args, "-tags", strings.Join(p.Tags, ","))
		}
		cmd := exec.Command(goBin, append(args, "./"+c)...)
		cmd.Dir = src
		cmd.Env = goEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./%s: %v: %s", c, err, tail(out))
		}
	}
	os.RemoveAll(dir) // an incomplete cache from an older run
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	tb.Logf("modbuild: built %s %s into %s (%v)", p.Module, p.Version, dir, time.Since(start).Round(time.Second))
	return dir, nil
}

// built reports whether dir holds every command's binary.
func built(dir string, cmds []string) bool {
	for _, c := range cmds {
		fi, err := os.Stat(Bin(dir, c))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// goEnv is the go commands' environment: outside any workspace, not
// taking -mod=vendor or the like from the caller's GOFLAGS, static.
func goEnv() []string {
	return append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false", "CGO_ENABLED=0")
}

// download fetches a module and returns its directory.
func download(goBin, modVersion string) (string, error) {
	cmd := exec.Command(goBin, "mod", "download", "-json", modVersion)
	cmd.Dir = os.TempDir() // not inside a module
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &m); jerr == nil && m.Error != "" {
		return "", errors.New(m.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %v: %s", modVersion, err, tail(stderr.Bytes()))
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s printed no directory: %s", modVersion, tail(out))
	}
	return m.Dir, nil
}

// tail is the end of a command's output, for an error message.
func tail(b []byte) string {
	const n = 2000
	if len(b) > n {
		return "..." + string(b[len(b)-n:])
	}
	return string(b)
}
