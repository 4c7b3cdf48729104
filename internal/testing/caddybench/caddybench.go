// Package caddybench runs Caddy (github.com/caddyserver/caddy/v2), a
// reverse proxy the gateway's benchmark is compared with, as a real
// process on loopback for a test's lifetime.
//
// Caddy is a benchmark peer, not a dependency: Binary builds the pinned
// Version once with internal/testing/modbuild.
package caddybench

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/modbuild"
	"github.com/pc2/pc2/internal/testing/proc"
)

// Version is the Caddy release the benchmarks run.
const Version = "v2.11.9"

// Binary returns the path of caddy, building it the first time (about
// 3 minutes with an empty module cache on 2 cores).
func Binary(tb testing.TB) string {
	tb.Helper()
	dir := modbuild.Build(tb, modbuild.Program{Name: "caddy", Module: "github.com/caddyserver/caddy/v2", Version: Version,
		Cmds: []string{"cmd/caddy"}})
	return modbuild.Bin(dir, "caddy")
}

// Proxy is a running Caddy.
type Proxy struct {
	// Addr is where it listens (plain HTTP; HTTPS for ReverseProxyTLS).
	Addr string

	cmd  *exec.Cmd
	out  *proc.TailBuffer
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
	return start(tb, upstream, "", "")
}

// ReverseProxyTLS is ReverseProxy serving HTTPS (TLS 1.2 and 1.3,
// HTTP/1.1 and HTTP/2) with the certificate chain in certFile and its
// key in keyFile (PEM), as a TLS-terminating proxy in front of upstream.
func ReverseProxyTLS(tb testing.TB, upstream, certFile, keyFile string) *Proxy {
	tb.Helper()
	return start(tb, upstream, certFile, keyFile)
}

func start(tb testing.TB, upstream, certFile, keyFile string) *Proxy {
	tb.Helper()
	bin := Binary(tb)
	dir := tb.TempDir()
	p := &Proxy{Addr: proc.FreeAddr(tb), out: &proc.TailBuffer{Max: 64 << 10}, done: make(chan struct{})}
	server := map[string]any{
		"listen":          []string{p.Addr},
		"automatic_https": map[string]any{"disable": true},
		"routes": []any{map[string]any{"handle": []any{map[string]any{
			"handler":   "reverse_proxy",
			"upstreams": []any{map[string]any{"dial": upstream}},
		}}}},
	}
	apps := map[string]any{"http": map[string]any{"servers": map[string]any{"bench": server}}}
	if certFile != "" {
		// The certificate is loaded, not obtained; one empty connection
		// policy turns TLS on for the listener. No HTTP/3: it would
		// listen on the UDP port too, and the benchmarks' clients speak
		// TCP.
		server["tls_connection_policies"] = []any{map[string]any{}}
		server["protocols"] = []string{"h1", "h2"}
		apps["tls"] = map[string]any{"certificates": map[string]any{
			"load_files": []any{map[string]any{"certificate": certFile, "key": keyFile}}}}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps":    apps,
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
	p.cmd.SysProcAttr = proc.SysProcAttr()
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
