// Package frpbench runs frp (github.com/fatedier/frp), the reverse proxy
// the relay's benchmarks are compared with, as real frps and frpc
// processes on loopback for a test's lifetime.
//
// frp is a benchmark peer, not a dependency: Binaries builds the pinned
// Version once with internal/testing/modbuild. Every proxy runs the way frp is usually
// deployed across the internet: one TLS connection from frpc to frps
// (transport.tls.enable, and frps forces it) carrying all work connections
// multiplexed (transport.tcpMux).
package frpbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/modbuild"
	"github.com/pc2/pc2/internal/testing/proc"
)

// Version is the frp release the benchmarks run.
const Version = "v0.70.1"

const module = "github.com/fatedier/frp"

// Binaries returns the paths of frps and frpc, built with -tags noweb
// (no dashboard assets) the first time.
func Binaries(tb testing.TB) (frps, frpc string) {
	tb.Helper()
	dir := modbuild.Build(tb, modbuild.Program{Name: "frp", Module: module, Version: Version,
		Cmds: []string{"cmd/frps", "cmd/frpc"}, Tags: []string{"noweb"}})
	return modbuild.Bin(dir, "frps"), modbuild.Bin(dir, "frpc")
}

// Config lists the proxies frpc registers.
type Config struct {
	TCP  []TCPProxy
	HTTP []HTTPProxy
	// SubdomainHost is frps's subDomainHost (default "frp.test").
	SubdomainHost string
	// NoMux turns tcpMux off: each proxied connection gets a work
	// connection of its own between frpc and frps (TLS still on).
	NoMux bool
}

// TCPProxy is an frp "tcp" proxy: a port on frps that forwards to
// LocalAddr on frpc's side.
type TCPProxy struct {
	Name      string
	LocalAddr string // host:port
}

// HTTPProxy is an frp "http" proxy: requests to frps's vhost HTTP port
// with Host <Subdomain>.<SubdomainHost> go to LocalAddr.
type HTTPProxy struct {
	Name      string
	Subdomain string
	LocalAddr string // host:port
}

// Tunnel is a running frps and frpc pair.
type Tunnel struct {
	// ServerAddr is frps's bind address, where frpc's one TLS connection goes.
	ServerAddr string
	// HTTPAddr is frps's vhost HTTP address ("" without HTTP proxies).
	HTTPAddr string
	// SubdomainHost is frps's subDomainHost.
	SubdomainHost string

	cfg   Config
	tcp   map[string]string // proxy name -> frps's public address
	procs []*process
}

// TCPAddr is the public address on frps of the TCP proxy name.
func (t *Tunnel) TCPAddr(name string) string { return t.tcp[name] }

// Host is the Host header that reaches the HTTP proxy name.
func (t *Tunnel) Host(name string) string {
	for _, p := range t.cfg.HTTP {
		if p.Name == name {
			return p.Subdomain + "." + t.SubdomainHost
		}
	}
	return ""
}

// PIDs are the process IDs of frps and frpc (for CPU accounting).
func (t *Tunnel) PIDs() []int {
	var out []int
	for _, p := range t.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// Start runs frps and frpc with cfg's proxies on loopback until the end of
// the test, and returns once every proxy is up.
func Start(tb testing.TB, cfg Config) *Tunnel {
	tb.Helper()
	if len(cfg.TCP)+len(cfg.HTTP) == 0 {
		tb.Fatal("frpbench: no proxies")
	}
	if cfg.SubdomainHost == "" {
		cfg.SubdomainHost = "frp.test"
	}
	frps, frpc := Binaries(tb)
	dir := tb.TempDir()
	token := make([]byte, 16)
	rand.Read(token)
	t := &Tunnel{ServerAddr: proc.FreeAddr(tb), SubdomainHost: cfg.SubdomainHost, cfg: cfg, tcp: map[string]string{}}
	if len(cfg.HTTP) > 0 {
		t.HTTPAddr = proc.FreeAddr(tb)
	}
	admin := proc.FreeAddr(tb)
	tok := hex.EncodeToString(token)

	var s strings.Builder
	fmt.Fprintf(&s, "bindAddr = %q\nbindPort = %s\n", "127.0.0.1", port(t.ServerAddr))
	fmt.Fprintf(&s, "auth.method = \"token\"\nauth.token = %q\n", tok)
	fmt.Fprintf(&s, "transport.tcpMux = %v\ntransport.tls.force = true\n", !cfg.NoMux)
	if t.HTTPAddr != "" {
		fmt.Fprintf(&s, "vhostHTTPPort = %s\nsubDomainHost = %q\n", port(t.HTTPAddr), cfg.SubdomainHost)
	}
	s.WriteString("log.to = \"console\"\nlog.level = \"info\"\nlog.disablePrintColor = true\n")

	var c strings.Builder
	fmt.Fprintf(&c, "serverAddr = %q\nserverPort = %s\nloginFailExit = true\n", "127.0.0.1", port(t.ServerAddr))
	fmt.Fprintf(&c, "auth.method = \"token\"\nauth.token = %q\n", tok)
	fmt.Fprintf(&c, "transport.tcpMux = %v\ntransport.tls.enable = true\n", !cfg.NoMux)
	fmt.Fprintf(&c, "webServer.addr = %q\nwebServer.port = %s\n", "127.0.0.1", port(admin))
	c.WriteString("log.to = \"console\"\nlog.level = \"info\"\nlog.disablePrintColor = true\n")
	for _, p := range cfg.TCP {
		host, lport := splitAddr(tb, p.LocalAddr)
		// remotePort 0: frps picks a free port, the status API names it.
		fmt.Fprintf(&c, "\n[[proxies]]\nname = %q\ntype = \"tcp\"\nlocalIP = %q\nlocalPort = %s\nremotePort = 0\n", p.Name, host, lport)
	}
	for _, p := range cfg.HTTP {
		host, lport := splitAddr(tb, p.LocalAddr)
		fmt.Fprintf(&c, "\n[[proxies]]\nname = %q\ntype = \"http\"\nlocalIP = %q\nlocalPort = %s\nsubdomain = %q\n", p.Name, host, lport, p.Subdomain)
	}

	t.procs = append(t.procs, startProcess(tb, frps, filepath.Join(dir, "frps.toml"), s.String()))
	waitListening(tb, t.ServerAddr, t.procs[0])
	t.procs = append(t.procs, startProcess(tb, frpc, filepath.Join(dir, "frpc.toml"), c.String()))
	t.waitReady(tb, "http://"+admin+"/api/status")
	return t
}

// waitReady polls frpc's status API until every proxy is running.
func (t *Tunnel) waitReady(tb testing.TB, url string) {
	tb.Helper()
	want := len(t.cfg.TCP) + len(t.cfg.HTTP)
	var last string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, p := range t.procs {
			if p.exited() {
				tb.Fatalf("frpbench: %s exited before the proxies were up:\n%s", p.name, p.out.String())
			}
		}
		st, err := proxyStatus(url)
		if err != nil {
			last = err.Error()
			continue
		}
		running := 0
		for _, ps := range st {
			if ps.Status != "running" {
				last = fmt.Sprintf("proxy %s: %s %s", ps.Name, ps.Status, ps.Err)
				continue
			}
			if ps.Type == "tcp" {
				_, p, err := net.SplitHostPort(ps.RemoteAddr)
				if err != nil {
					last = fmt.Sprintf("proxy %s: remote address %q", ps.Name, ps.RemoteAddr)
					continue
				}
				t.tcp[ps.Name] = net.JoinHostPort("127.0.0.1", p)
			}
			running++
		}
		if running == want {
			return
		}
		last = fmt.Sprintf("%d of %d proxies running; %s", running, want, last)
	}
	tb.Fatalf("frpbench: proxies not up after 30 s: %s\nfrps:\n%s\nfrpc:\n%s", last, t.procs[0].out.String(), t.procs[1].out.String())
}

type proxyState struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Status     string `json:"status"`
	Err        string `json:"err"`
	RemoteAddr string `json:"remote_addr"`
}

// proxyStatus reads frpc's GET /api/status: proxies by type.
func proxyStatus(url string) ([]proxyState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var byType map[string][]proxyState
	if err := json.NewDecoder(resp.Body).Decode(&byType); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	var out []proxyState
	for _, ps := range byType {
		out = append(out, ps...)
	}
	return out, nil
}

// process is frps or frpc, killed at the end of the test.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *proc.TailBuffer
	done chan struct{}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startProcess(tb testing.TB, bin, config, text string) *process {
	tb.Helper()
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := &process{name: filepath.Base(bin), out: &proc.TailBuffer{Max: 64 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-c", config)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = proc.SysProcAttr()
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("frpbench: start %s: %v", p.name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// waitListening waits until addr accepts connections.
func waitListening(tb testing.TB, addr string, p *process) {
	tb.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if p.exited() {
			tb.Fatalf("frpbench: %s exited:\n%s", p.name, p.out.String())
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	tb.Fatalf("frpbench: %s not listening on %s after 10 s:\n%s", p.name, addr, p.out.String())
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func splitAddr(tb testing.TB, addr string) (host, port string) {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("frpbench: local address %q: %v", addr, err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		tb.Fatalf("frpbench: local address %q: port is not a number", addr)
	}
	return host, port
}
