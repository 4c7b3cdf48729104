package main

import (
	"bytes"
	"cmp"
	"context"
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
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/wrkbench"
)

// Flags of BenchmarkRealPath.
var (
	rpDuration = flag.Duration("realpath.duration", 10*time.Second, "length of each load run")
	rpConns    = flag.String("realpath.conns", "50,200,1000", "keep-alive connections of the load generator, a set of runs for each (comma-separated)")
	rpVerbose  = flag.Bool("realpath.v", false, "print why the gateway failed requests (from its log), counted")
	rpProfile  = flag.String("realpath.profile", "", "write the supernode's and the node's CPU profiles (supernode.pprof, node.pprof) into this directory")
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
// handler's share of the cost. Each path and load runs b.N times
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
	gw, node := rpStart(b, bin, dir)
	script, err := wrkbench.WriteScript(dir)
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
		{"gateway+relay+node", func() string { return "http://alice.pc2.test:" + gw + "/hello.txt" }},
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
	}
	type row struct {
		path  string
		conns int
		rs    []wrkbench.Result
	}
	var rows []*row
	for _, p := range paths {
		url := p.url()
		rpCheck(b, url)
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
					for b.Loop() {
						res, out, err := wrkbench.Run(wrk, script, l)
						if err != nil {
							b.Fatalf("%v\n%s", err, out)
						}
						r.rs = append(r.rs, res)
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
	fmt.Fprintf(&sb, "%-20s %6s %12s %10s %10s %8s %8s\n", "path", "conns", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket")
	for _, r := range rows {
		for _, res := range r.rs {
			fmt.Fprintf(&sb, "%-20s %6d %12.0f %10.2f %10.2f %8d %8d\n", r.path, r.conns, res.RPS(),
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
		if n, _, ok := median("node-listener", c); ok {
			if f, _, ok := median("go-file-server", c); ok {
				fmt.Fprintf(&sb, "; the node's own handler at %.0f %% of a bare Go file server", 100*n/f)
			}
		}
		sb.WriteString("\n")
	}
	fmt.Fprintf(&sb, "supernode: %s\nnode: %s\n", rpMem(node.sn.cmd.Process.Pid), rpMem(node.pid))
	fmt.Print(sb.String())
	if *rpVerbose {
		// Why the gateway failed requests, from its log.
		seen := map[string]int{}
		for _, l := range strings.Split(node.sn.log.String(), "\n") {
			if i := strings.Index(l, "err="); i >= 0 && strings.Contains(l, "unreachable") {
				seen[l[i:min(len(l), i+300)]]++
			}
		}
		for k, v := range seen {
			fmt.Println(v, k)
		}
	}
}

// rpNode is the node process; sn the supernode's.
type rpNode struct {
	listen, dataDir string
	pid             int
	sn              *supernodeProc
}

// rpStart runs the supernode and the node from their configs, sets the
// node up (wizard, name, the public file) and returns the gateway's
// HTTP port and the node.
func rpStart(b *testing.B, bin, dir string, tweak ...func(sn, node map[string]any)) (string, rpNode) {
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
	sn := startSupernode(b, bin, filepath.Join(dir), snBase, snFlags...)
	node := rpNode{listen: "127.0.0.1:" + rpFreePort(b), dataDir: filepath.Join(dir, "node"), sn: sn}
	cfg := map[string]any{"key_file": filepath.Join(dir, "node.key"), "data_dir": node.dataDir, "listen": node.listen,
		"mode": "relayed", "supernodes": []string{sn.addr(b, "tcp")}, "pin_supernodes": true,
		"name_services": []map[string]string{{"domain": "pc2.test", "api": "http://127.0.0.1:" + gwPort}}}
	maps.Copy(cfg, nodeCfg)
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "node.json")
	if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"node", "--config", cfgFile}, nodeFlags...)...)
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
			b.Logf("node log:\n%s", log.String())
		}
	})
	base := "http://" + node.listen
	testenv.WaitFor(b, 30*time.Second, "the node's listener", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	owner := cloudtest.New(b, base, nil)
	owner.CreateIdentity()
	owner.Password("owner password")
	if r := owner.Claim("alice", ""); r.Code != http.StatusSeeOther {
		b.Fatalf("claim: %d %s", r.Code, r.Err())
	}
	if r := owner.Upload("public/hello.txt", strings.NewReader(rpBody)); r.Code != http.StatusCreated {
		b.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	return gwPort, node
}

// rpCheck waits until url answers the public file.
func rpCheck(b *testing.B, url string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
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
	_, node := rpStart(b, bin, dir, func(sn, n map[string]any) {
		sn["relay_listen_ip"] = "127.0.0.1"
		n["expose_tcp"] = map[string]string{"iperf": server}
	})
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
