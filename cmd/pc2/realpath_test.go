package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/caddybench"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/frpbench"
	"github.com/pc2/pc2/internal/testing/nginxbench"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/wrkbench"
)

// Flags of BenchmarkRealPath.
var (
	rpDuration = flag.Duration("realpath.duration", 10*time.Second, "length of each load run")
	rpConns    = flag.String("realpath.conns", "50,200,1000", "keep-alive connections of the load generator, a set of runs for each (comma-separated)")
	rpVerbose  = flag.Bool("realpath.v", false, "print why the gateway failed requests (from its log), counted, and the failed answers' statuses (wrk then calls Lua for each answer)")
	rpProfile  = flag.String("realpath.profile", "", "write the supernode's and the node's CPU profiles (supernode.pprof, node.pprof) into this directory")
	rpSettle   = flag.Duration("realpath.settle", 0, "pause between the warm-up and the measured runs")
)

// rpBody is the public file the benchmark fetches: 14 bytes, as in the
// independent benchmark of issue 21.
const rpBody = "hello, world!\n"

// BenchmarkRealPath (issue 21) measures what a visitor gets on the
// product's own path: `pc2 supernode` and `pc2 node` run as processes
// from their JSON configs, as an operator and an owner run them; the
// node, relayed (attached to the supernode, no direct route), was set up
// through its wizard, claimed alice.pc2.test at the supernode's names
// API and serves a 14-byte file of its public site from disk; wrk
// fetches it through the gateway (HTTP on loopback) with keep-alive
// connections. Default limits everywhere except the gateway's per-IP
// rate limit (raised: all of wrk's connections come from one address).
// Beside it, the same file straight from the node's own listener (its
// local port 4200 handler) and from a bare Go file server
// (http.FileServer on the same file, in this process), for the node
// handler's share of the cost. Over HTTPS (rpStartTLS), a second
// supernode whose gateway serves HTTPS with certificates from Pebble:
// bob's visitors' TLS ends at the gateway, carol's at her node (end to
// end, spliced), beside Caddy and nginx terminating TLS with carol's
// certificate in front of her node's listener. Each path and load runs b.N times
// (-benchtime 3x); errors (answers other than 2xx/3xx, socket errors)
// are counted, never hidden.
func BenchmarkRealPath(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		testenv.SkipOrFail(b, "no wrk (apt-get install wrk): %v", err)
	}
	var conns []int
	for _, s := range strings.Split(*rpConns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("-realpath.conns: %q", s)
		}
		conns = append(conns, n)
	}
	dir := b.TempDir()
	bin := buildPC2(b)
	e := rpStart(b, bin, dir)
	node := e.node
	tl := rpStartTLS(b, bin, dir, e)
	write := wrkbench.WriteScript
	if *rpVerbose {
		write = wrkbench.WriteStatusScript
	}
	script, err := write(dir)
	if err != nil {
		b.Fatal(err)
	}
	// The bare Go file server, on the same file.
	pub := filepath.Join(node.dataDir, "files", "public")
	bare := &http.Server{Handler: http.FileServer(http.Dir(pub))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go bare.Serve(ln)
	b.Cleanup(func() { bare.Close() })

	paths := []struct {
		name string
		url  func() string
	}{
		{"gateway+relay+node", func() string { return "http://alice.pc2.test:" + e.gwPort + "/hello.txt" }},
		{"frp-vhost", func() string {
			// frps's vhost HTTP port -> one TLS connection, tcpMux -> frpc
			// -> the node's listener, as frp is usually run.
			tun := frpbench.Start(b, frpbench.Config{HTTP: []frpbench.HTTPProxy{{Name: "node", Subdomain: "bench", LocalAddr: node.listen}}})
			_, p, _ := net.SplitHostPort(tun.HTTPAddr)
			return "http://" + tun.Host("node") + ":" + p + "/hello.txt"
		}},
		{"caddy", func() string { return "http://" + caddybench.ReverseProxy(b, node.listen).Addr + "/hello.txt" }},
		{"nginx", func() string { return "http://" + nginxbench.ReverseProxy(b, node.listen, "", "") + "/hello.txt" }},
		{"node-listener", func() string { return "http://" + node.listen + "/hello.txt" }},
		{"go-file-server", func() string { return "http://" + ln.Addr().String() + "/hello.txt" }},
		// HTTPS (HTTP/1.1 over TLS 1.3: wrk offers no ALPN): bob's
		// visitors' TLS ends at the gateway, carol's at her node (the
		// gateway splices it); Caddy and nginx terminate with carol's
		// certificate and key and proxy to her node's listener.
		{"https-gateway-terminates", func() string { return "https://bob.pc2.test:" + tl.httpsPort + "/hello.txt" }},
		{"https-end-to-end", func() string { return "https://carol.pc2.test:" + tl.httpsPort + "/hello.txt" }},
		{"https-caddy", func() string {
			_, p, _ := net.SplitHostPort(caddybench.ReverseProxyTLS(b, tl.carol.listen, tl.certFile, tl.keyFile).Addr)
			return "https://carol.pc2.test:" + p + "/hello.txt"
		}},
		{"https-nginx", func() string {
			_, p, _ := net.SplitHostPort(nginxbench.ReverseProxy(b, tl.carol.listen, tl.certFile, tl.keyFile))
			return "https://carol.pc2.test:" + p + "/hello.txt"
		}},
	}
	type row struct {
		path  string
		conns int
		rs    []wrkbench.Result
	}
	var rows []*row
	for _, p := range paths {
		url := p.url()
		rpCheck(b, url, tl.roots)
		b.Run(p.name, func(b *testing.B) {
			for _, c := range conns {
				r := &row{path: p.name, conns: c}
				rows = append(rows, r)
				b.Run("conns="+strconv.Itoa(c), func(b *testing.B) {
					l := wrkbench.Load{URL: url, Conns: c, Duration: *rpDuration}
					warm := l
					warm.Duration = 2 * time.Second
					if _, out, err := wrkbench.Run(wrk, script, warm); err != nil {
						b.Fatalf("warm-up: %v\n%s", err, out)
					}
					// The warm-up's connections closed with requests
					// and TLS connections in the gateway's line; the
					// gateway must let them go at once (it kept the TLS
					// ones for QueueWait once, and the first run found
					// the line full: docs/benchmarks.md), so by default
					// the runs follow at once.
					time.Sleep(*rpSettle)
					for b.Loop() {
						res, out, err := wrkbench.Run(wrk, script, l)
						if err != nil {
							b.Fatalf("%v\n%s", err, out)
						}
						r.rs = append(r.rs, res)
						if *rpVerbose && res.Status > 0 {
							b.Logf("%s, %d connections: failed answers by status %v", p.name, c, wrkbench.ParseStatuses(out))
						}
					}
					last := r.rs[len(r.rs)-1]
					b.ReportMetric(last.RPS(), "req/s")
					b.ReportMetric(float64(last.P99)/1e6, "p99-ms")
					b.ReportMetric(float64(last.Status+last.Errors()), "errors")
				})
			}
		})
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nreal path (issue 21): %s, %d CPUs, %v per run\n", rpCPU(), runtime.NumCPU(), *rpDuration)
	fmt.Fprintf(&sb, "%-26s %6s %12s %10s %10s %8s %8s\n", "path", "conns", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket")
	for _, r := range rows {
		for _, res := range r.rs {
			fmt.Fprintf(&sb, "%-26s %6d %12.0f %10.2f %10.2f %8d %8d\n", r.path, r.conns, res.RPS(),
				float64(res.P50)/1e6, float64(res.P99)/1e6, res.Status, res.Errors())
		}
	}
	// The targets: the gateway path against frp and Caddy, medians.
	median := func(path string, conns int) (rps, p99 float64, ok bool) {
		for _, r := range rows {
			if r.path == path && r.conns == conns && len(r.rs) > 0 {
				rs := slices.Clone(r.rs)
				slices.SortFunc(rs, func(a, b wrkbench.Result) int { return cmp.Compare(a.RPS(), b.RPS()) })
				m := rs[len(rs)/2]
				return m.RPS(), float64(m.P99) / 1e6, true
			}
		}
		return 0, 0, false
	}
	for _, c := range conns {
		g, gp, ok := median("gateway+relay+node", c)
		if !ok {
			continue
		}
		fmt.Fprintf(&sb, "%d connections: gateway %.0f req/s, p99 %.1f ms", c, g, gp)
		for _, other := range []string{"frp-vhost", "caddy", "nginx"} {
			if o, op, ok := median(other, c); ok {
				fmt.Fprintf(&sb, "; %.2fx %s (p99 %.2f of its)", g/o, other, gp/op)
			}
		}
		for _, https := range []string{"https-gateway-terminates", "https-end-to-end"} {
			h, hp, ok := median(https, c)
			if !ok {
				continue
			}
			fmt.Fprintf(&sb, "\n  %s %.0f req/s, p99 %.1f ms", https, h, hp)
			for _, other := range []string{"https-caddy", "https-nginx"} {
				if o, op, ok := median(other, c); ok {
					fmt.Fprintf(&sb, "; %.2fx %s (p99 %.2f of its)", h/o, other, hp/op)
				}
			}
		}
		if n, _, ok := median("node-listener", c); ok {
			if f, _, ok := median("go-file-server", c); ok {
				fmt.Fprintf(&sb, "; the node's own handler at %.0f %% of a bare Go file server", 100*n/f)
			}
		}
		sb.WriteString("\n")
	}
	fmt.Fprintf(&sb, "supernode: %s\nnode: %s\nHTTPS supernode: %s\n", rpMem(e.sn.cmd.Process.Pid), rpMem(node.pid), rpMem(tl.sn.cmd.Process.Pid))
	fmt.Print(sb.String())
	if *rpVerbose {
		// Why the gateway failed requests, from its log.
		seen := map[string]int{}
		for _, l := range strings.Split(e.sn.log.String()+tl.sn.log.String(), "\n") {
			if i := strings.Index(l, "err="); i >= 0 && strings.Contains(l, "unreachable") {
				seen[l[i:min(len(l), i+300)]]++
			} else if i := strings.Index(l, "msg="); i >= 0 && (strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) {
				seen[l[i:min(len(l), i+120)]]++
			}
		}
		for k, v := range seen {
			fmt.Println(v, k)
		}
	}
}

// rpNode is a node process.
type rpNode struct {
	listen, dataDir string
	pid             int
	owner           *cloudtest.Browser // logged in on the node's listener
}

// rpEnv is the supernode (with its HTTP gateway and names API) and alice,
// relayed through it.
type rpEnv struct {
	gwPort, opDID, api string
	sn                 *supernodeProc
	node               rpNode
}

// rpStart runs the supernode and alice's node from their configs, sets
// the node up (wizard, name, the public file) and returns them.
func rpStart(b *testing.B, bin, dir string, tweak ...func(sn, node map[string]any)) rpEnv {
	opKey, opDID := newKey(b, bin, dir, "operator")
	gwPort := rpFreePort(b)
	snCfg := map[string]any{}
	nodeCfg := map[string]any{}
	for _, f := range tweak {
		f(snCfg, nodeCfg)
	}
	var snFlags, nodeFlags []string
	if *rpProfile != "" {
		snFlags = []string{"--cpuprofile", filepath.Join(*rpProfile, "supernode.pprof")}
		nodeFlags = []string{"--cpuprofile", filepath.Join(*rpProfile, "node.pprof")}
	}
	snBase := map[string]any{
		"key_file": filepath.Join(dir, "sn.key"), "create_key": true, "data_dir": filepath.Join(dir, "sn"),
		"listen": []string{"/ip4/127.0.0.1/tcp/0"}, "allow_private_dials": true,
		"domains": []map[string]string{{"domain": "pc2.test", "operator": opDID}},
		"gateway": map[string]any{"http_listen": "127.0.0.1:" + gwPort, "operator_keys": map[string]string{"pc2.test": opKey},
			// wrk's connections all come from 127.0.0.1: the one
			// default changed.
			"rate_limit": 1e9, "burst": 1 << 30},
	}
	maps.Copy(snBase, snCfg)
	e := rpEnv{gwPort: gwPort, opDID: opDID, api: "http://127.0.0.1:" + gwPort}
	e.sn = startSupernode(b, bin, filepath.Join(dir), snBase, snFlags...)
	e.node = rpStartNode(b, bin, filepath.Join(dir, "alice"), "alice", e.sn.addr(b, "tcp"), e.api, nodeCfg, nodeFlags...)
	return e
}

// rpStartNode runs a relayed node attached to supernode from its config
// (with extra), sets it up through its wizard, claims label at the names
// API and uploads the public file.
func rpStartNode(b *testing.B, bin, dir, label, supernode, api string, extra map[string]any, flags ...string) rpNode {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	node := rpNode{listen: "127.0.0.1:" + rpFreePort(b), dataDir: filepath.Join(dir, "node")}
	cfg := map[string]any{"key_file": filepath.Join(dir, "node.key"), "data_dir": node.dataDir, "listen": node.listen,
		"mode": "relayed", "supernodes": []string{supernode}, "pin_supernodes": true,
		"name_services": []map[string]string{{"domain": "pc2.test", "api": api}}}
	maps.Copy(cfg, extra)
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "node.json")
	if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"node", "--config", cfgFile}, flags...)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	node.pid = cmd.Process.Pid
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if b.Failed() {
			b.Logf("%s's node log:\n%s", label, log.String())
		}
	})
	base := "http://" + node.listen
	testenv.WaitFor(b, 30*time.Second, label+"'s listener", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	node.owner = cloudtest.New(b, base, nil)
	node.owner.CreateIdentity()
	node.owner.Password("owner password")
	if r := node.owner.Claim(label, ""); r.Code != http.StatusSeeOther {
		b.Fatalf("%s: claim: %d %s", label, r.Code, r.Err())
	}
	if r := node.owner.Upload("public/hello.txt", strings.NewReader(rpBody)); r.Code != http.StatusCreated {
		b.Fatalf("%s: upload: %d %s", label, r.Code, r.Err())
	}
	return node
}

// rpTLS is the HTTPS side of the benchmark: a second supernode whose
// gateway serves HTTPS only, with certificates from an ACME CA (Pebble),
// and two nodes relayed through it: bob without a certificate of his own
// (the gateway terminates his visitors' TLS) and carol with one (the
// gateway splices her visitors' TLS to her: end to end).
type rpTLS struct {
	httpsPort         string
	sn                *supernodeProc
	bob, carol        rpNode
	roots             *x509.CertPool
	certFile, keyFile string // carol's, for Caddy and nginx to terminate with
}

// rpStartTLS starts the HTTPS side beside e, in the same DHT and domain;
// bob and carol claim their names at e's names API.
func rpStartTLS(b *testing.B, bin, dir string, e rpEnv) *rpTLS {
	port, httpPort := proc.FreePort(b), proc.FreePort(b)
	pb := pebbletest.Start(b, pebbletest.Options{TLSPort: port, HTTPPort: httpPort})
	for _, h := range []string{"bob.pc2.test", "carol.pc2.test"} {
		if err := pb.AddA(h, "127.0.0.1"); err != nil {
			b.Fatal(err)
		}
	}
	t := &rpTLS{httpsPort: strconv.Itoa(port)}
	var err error
	if t.roots, err = pb.IssuingRoots(); err != nil {
		b.Fatal(err)
	}
	acme := map[string]string{"ca": pb.DirectoryURL, "ca_root": string(pb.ClientRootsPEM)}
	snDir := filepath.Join(dir, "sn2")
	if err := os.MkdirAll(snDir, 0o755); err != nil {
		b.Fatal(err)
	}
	t.sn = startSupernode(b, bin, snDir, map[string]any{
		"key_file": filepath.Join(snDir, "sn.key"), "create_key": true, "data_dir": filepath.Join(snDir, "data"),
		"listen": []string{"/ip4/127.0.0.1/tcp/0"}, "allow_private_dials": true, "bootstrap": []string{e.sn.addr(b, "tcp")},
		"domains": []map[string]string{{"domain": "pc2.test", "operator": e.opDID}},
		"gateway": map[string]any{"https_listen": "127.0.0.1:" + t.httpsPort, "http_listen": "127.0.0.1:" + strconv.Itoa(httpPort), "acme": acme,
			"rate_limit": 1e9, "burst": 1 << 30},
	})
	at := t.sn.addr(b, "tcp")
	t.bob = rpStartNode(b, bin, filepath.Join(dir, "bob"), "bob", at, e.api, nil)
	t.carol = rpStartNode(b, bin, filepath.Join(dir, "carol"), "carol", at, e.api, map[string]any{"tls": acme})
	testenv.WaitFor(b, 2*time.Minute, "carol's own certificate", func() bool {
		var st struct {
			TLS *struct {
				Mode string `json:"mode"`
			} `json:"tls"`
		}
		json.Unmarshal([]byte(t.carol.owner.Get("/api/status").Body), &st)
		return st.TLS != nil && st.TLS.Mode == "end-to-end"
	})
	certDir := filepath.Join(t.carol.dataDir, "certs")
	carolKey, err := pebbletest.StoredKey(certDir, "carol.pc2.test")
	if err != nil {
		b.Fatal(err)
	}
	t.keyFile = pebbletest.KeyFiles(certDir, "carol.pc2.test")[0]
	t.certFile = strings.TrimSuffix(t.keyFile, ".key") + ".crt"
	// The gateway presents carol's own key for her name (end to end)
	// and its own certificate for bob's (terminated there).
	addr := "127.0.0.1:" + t.httpsPort
	testenv.WaitFor(b, time.Minute, "carol's certificate at the gateway", func() bool {
		leaf, err := pebbletest.Leaf(addr, "carol.pc2.test", t.roots)
		return err == nil && pebbletest.SameKey(carolKey, leaf.PublicKey)
	})
	testenv.WaitFor(b, time.Minute, "the gateway's certificate for bob", func() bool {
		leaf, err := pebbletest.Leaf(addr, "bob.pc2.test", t.roots)
		return err == nil && slices.Equal(leaf.DNSNames, []string{"bob.pc2.test"}) && !pebbletest.SameKey(carolKey, leaf.PublicKey)
	})
	if k := pebbletest.KeyFiles(filepath.Join(snDir, "data", "certs"), "carol.pc2.test"); len(k) > 0 {
		b.Fatalf("the gateway holds a key for carol's name: %v", k)
	}
	return t
}

// rpCheck waits until url answers the public file.
func rpCheck(b *testing.B, url string, roots *x509.CertPool) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
	}}}
	var got string
	defer func() {
		if b.Failed() {
			b.Logf("%s answered last: %s", url, got)
		}
	}()
	testenv.WaitFor(b, 30*time.Second, url+" to answer the file", func() bool {
		resp, err := c.Get(url)
		if err != nil {
			got = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = fmt.Sprintf("%d %q", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK && string(body) == rpBody
	})
}

func rpFreePort(b *testing.B) string { return strconv.Itoa(proc.FreePort(b)) }

// rpMem is a process's resident memory, peak and now (from /proc).
func rpMem(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	var peak, rss string
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	return "resident " + rss + ", peak " + peak
}

func rpCPU() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// BenchmarkRealPathTCP (issue 21) measures one stream of raw TCP, iperf3
// for 10 s, through the relay's mapped port: the node (a `pc2 node`
// process) exposes an iperf3 server (`expose_tcp`), the supernode (a
// `pc2 supernode` process, default limits: 1 GiB/s per node each way)
// maps a port to it; beside it iperf3 straight to the server, through frp
// v0.70.1's tcp proxy with tcpMux and TLS (as usually run) and without
// tcpMux (TLS still on). Each path -benchtime times; medians printed.
func BenchmarkRealPathTCP(b *testing.B) {
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		testenv.SkipOrFail(b, "no iperf3 (apt-get install iperf3): %v", err)
	}
	dir := b.TempDir()
	server := proc.FreeAddr(b)
	_, port, _ := net.SplitHostPort(server)
	srv := exec.Command(iperf, "-s", "-B", "127.0.0.1", "-p", port)
	srv.SysProcAttr = proc.SysProcAttr()
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	bin := buildPC2(b)
	node := rpStart(b, bin, dir, func(sn, n map[string]any) {
		sn["relay_listen_ip"] = "127.0.0.1"
		n["expose_tcp"] = map[string]string{"iperf": server}
	}).node
	// The mapped port, from the node's status (the owner's view).
	var mapped int
	testenv.WaitFor(b, 30*time.Second, "the relay's mapped port", func() bool {
		resp, err := http.Get("http://" + node.listen + "/api/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Tunnel *struct {
				Supernodes []struct {
					Ports map[string]int `json:"ports"`
				} `json:"supernodes"`
			} `json:"tunnel"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || st.Tunnel == nil {
			return false
		}
		for _, s := range st.Tunnel.Supernodes {
			if p := s.Ports["iperf"]; p > 0 {
				mapped = p
			}
		}
		return mapped > 0
	})
	paths := []struct {
		name string
		addr func() string
	}{
		{"direct", func() string { return server }},
		{"pc2-relay", func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(mapped)) }},
		{"frp-tcpmux-tls", func() string {
			return frpbench.Start(b, frpbench.Config{TCP: []frpbench.TCPProxy{{Name: "iperf", LocalAddr: server}}}).TCPAddr("iperf")
		}},
		{"frp-tls-nomux", func() string {
			return frpbench.Start(b, frpbench.Config{TCP: []frpbench.TCPProxy{{Name: "iperf", LocalAddr: server}}, NoMux: true}).TCPAddr("iperf")
		}},
	}
	medians := map[string]float64{}
	for _, p := range paths {
		addr := p.addr()
		b.Run(p.name, func(b *testing.B) {
			var runs []float64
			for b.Loop() {
				bps, err := rpIperf(iperf, addr, *rpDuration)
				if err != nil {
					b.Fatal(err)
				}
				runs = append(runs, bps)
			}
			slices.Sort(runs)
			medians[p.name] = runs[len(runs)/2]
			b.ReportMetric(medians[p.name]/1e9, "Gbit/s")
		})
	}
	fmt.Printf("\nraw TCP, one stream, iperf3 %v per run (medians):\n", *rpDuration)
	for _, p := range paths {
		fmt.Printf("%-16s %6.2f Gbit/s\n", p.name, medians[p.name]/1e9)
	}
	if r, f := medians["pc2-relay"], medians["frp-tcpmux-tls"]; f > 0 {
		fmt.Printf("pc2's relay: %.2fx frp tcpMux+TLS, %.2fx frp without mux\n", r/f, r/medians["frp-tls-nomux"])
	}
}

// rpIperf runs one iperf3 transfer to addr and returns the bits per
// second the server received.
func rpIperf(iperf, addr string, d time.Duration) (float64, error) {
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(iperf, "-c", host, "-p", port, "-t", strconv.Itoa(max(1, int(d.Seconds()))), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 to %s: %v: %s", addr, err, out)
	}
	var r struct {
		End struct {
			Received struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Error != "" || r.End.Received.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 to %s: %v %s", addr, err, r.Error)
	}
	return r.End.Received.BitsPerSecond, nil
}
