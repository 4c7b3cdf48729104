// Package caddybench runs Caddy (github.com/caddyserver/caddy/v2), a
// reverse proxy the gateway's benchmark is compared with, as a real
// process on loopback for a test's lifetime.
//
// Caddy is a benchmark peer, not a dependency: it is not in go.mod.
// Binary builds the pinned Version from the Go module proxy once (`go
// install`) and keeps it in the user's cache directory. Without a Go
// toolchain or module proxy the tests skip, except under CI=true
// (testenv.SkipOrFail).
package caddybench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testenv"
)

// Version is the Caddy release the benchmarks run.
const Version = "v2.11.9"

const pkg = "github.com/caddyserver/caddy/v2/cmd/caddy"

// Dir is where the built binary is kept:
// $XDG_CACHE_HOME/pc2/caddy-<Version> (os.UserCacheDir).
func Dir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("caddybench: cache dir: %w", err)
	}
	return filepath.Join(c, "pc2", "caddy-"+Version), nil
}

var buildMu sync.Mutex

// Binary returns the path of caddy, building it the first time (about
// 3 minutes with an empty module cache on 2 cores).
func Binary(tb testing.TB) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	dir, err := Dir()
	if err != nil {
		testenv.SkipOrFail(tb, "%v", err)
	}
	bin := filepath.Join(dir, "caddy")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.SkipOrFail(tb, "caddybench: no Go toolchain to build Caddy %s: %v", Version, err)
	}
	// GOBIN is a fresh directory beside bin and the result is renamed
	// into place: a test binary of another package may build at the
	// same time.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		testenv.SkipOrFail(tb, "caddybench: %v", err)
	}
	tmp, err := os.MkdirTemp(dir, ".build")
	if err != nil {
		testenv.SkipOrFail(tb, "caddybench: %v", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(goBin, "install", "-trimpath", pkg+"@"+Version)
	cmd.Dir = os.TempDir() // not inside a module
	// Outside any workspace, and not taking -mod=vendor or the like
	// from the caller's GOFLAGS.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false", "GOBIN="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.SkipOrFail(tb, "caddybench: cannot build Caddy %s (toolchain or network): %v: %s", Version, err, tail(string(out), 2000))
	}
	if err := os.Rename(filepath.Join(tmp, "caddy"), bin); err != nil {
		testenv.SkipOrFail(tb, "caddybench: %v", err)
	}
	return bin
}

// Proxy is a running Caddy.
type Proxy struct {
	// Addr is where it listens (plain HTTP).
	Addr string

	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
}

// PID is Caddy's process ID (for CPU accounting).
func (p *Proxy) PID() int { return p.cmd.Process.Pid }

// ReverseProxy runs Caddy on loopback until the end of the test, as a
// plain HTTP reverse proxy (reverse_proxy with its defaults: keep-alive
// connections to the upstream, X-Forwarded-* headers) for every request
// to upstream (host:port), and returns once it accepts connections. The
// admin API, automatic HTTPS and access logs are off; warnings and
// errors go to the test's log if it fails.
func ReverseProxy(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	bin := Binary(tb)
	dir := tb.TempDir()
	p := &Proxy{Addr: freeAddr(tb), out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"bench": map[string]any{
			"listen":          []string{p.Addr},
			"automatic_https": map[string]any{"disable": true},
			"routes": []any{map[string]any{"handle": []any{map[string]any{
				"handler":   "reverse_proxy",
				"upstreams": []any{map[string]any{"dial": upstream}},
			}}}},
		}}}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	file := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	p.cmd = exec.Command(bin, "run", "--config", file)
	// Caddy's data and config directories: the test's, not the user's.
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("caddybench: start caddy: %v", err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("caddy output:\n%s", p.out.String())
		}
	})
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			tb.Fatalf("caddybench: caddy exited:\n%s", p.out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(end) {
			tb.Fatalf("caddybench: caddy not listening on %s after 30 s:\n%s", p.Addr, p.out.String())
		}
	}
}

// freeAddr is a loopback address with a port that was free a moment ago
// (Caddy takes its port from the config file).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.b.Len() > w.max {
		w.b.Next(w.b.Len() - w.max)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
