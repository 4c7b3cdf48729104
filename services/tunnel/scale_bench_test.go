package tunnel

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	snapp "github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/relayserver"
)

// Flags of BenchmarkRelayScale.
var (
	scaleNodes       = flag.Int("scale.nodes", 10000, "nodes attached to the supernode (its max_nodes: dht.Limits.Peers and the relay's MaxNodes)")
	scaleStorm       = flag.Duration("scale.storm", 3*time.Minute, "after the latency runs, restart the supernode and give every node this long to attach again (0: no restart)")
	scaleAttachConc  = flag.Int("scale.attach", 50, "nodes attaching at a time")
	scaleAttachWait  = flag.Duration("scale.attachwait", 15*time.Second, "how long one node may take to attach")
	scaleOpens       = flag.Int("scale.opens", 5000, "streams opened per latency run")
	scaleOpeners     = flag.String("scale.openers", "1,16", "concurrent openers of each latency run")
	scaleObserve     = flag.Duration("scale.observe", 75*time.Second, "how long to watch the sessions once attached (libp2p's connection manager trims connections older than 1 min)")
	scaleHeapProfile = flag.String("scale.heapprofile", "", "write the supernode's heap profile at full load to this file")
	scaleEnv         = flag.String("scale.env", "", "extra environment of the supernode process, comma-separated KEY=VALUE (GOGC=50)")
)

// scaleHelperEnv makes the test binary the supernode process.
const scaleHelperEnv = "PC2_SCALE_HELPER"

// scaleProfileEnv asks the helper for a finely sampled heap profile.
const scaleProfileEnv = "PC2_SCALE_PROFILE"

// scalePeersEnv is the helper's max_nodes (dht.Limits.Peers and the
// relay's MaxNodes); scaleSeedEnv its key (hex Ed25519 seed) and
// scaleListenEnv its listen address, the same across a restart so that
// the nodes come back to it.
const (
	scalePeersEnv  = "PC2_SCALE_PEERS"
	scaleSeedEnv   = "PC2_SCALE_SEED"
	scaleListenEnv = "PC2_SCALE_LISTEN"
)

// scaleReplyPrefix marks the helper's answers on its stdout.
const scaleReplyPrefix = "scale: "

// scaleStats is the supernode's state as the helper reports it.
type scaleStats struct {
	Addr        string `json:"addr,omitempty"`
	RSS         int64  `json:"rss"`
	PeakRSS     int64  `json:"peak_rss"`
	HeapInuse   int64  `json:"heap_inuse"`
	HeapAlloc   int64  `json:"heap_alloc"`
	StackInuse  int64  `json:"stack_inuse"`
	Sys         int64  `json:"sys"`
	Goroutines  int    `json:"goroutines"`
	Sessions    int    `json:"sessions"`
	Conns       int    `json:"conns"`
	Connects    int64  `json:"connects"`
	Disconnects int64  `json:"disconnects"`
	// The libp2p resource manager's view of the whole host, and its open
	// streams by protocol.
	Resources network.ScopeStat `json:"resources"`
	Streams   map[string]int    `json:"streams,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// streamsLine lists open streams by protocol, most first.
func (st scaleStats) streamsLine() string {
	protos := slices.Collect(maps.Keys(st.Streams))
	slices.SortFunc(protos, func(a, b string) int { return st.Streams[b] - st.Streams[a] })
	var parts []string
	for _, p := range protos {
		parts = append(parts, fmt.Sprintf("%s %d", p, st.Streams[p]))
	}
	return strings.Join(parts, ", ")
}

// scaleQuantiles summarises durations.
type scaleQuantiles struct {
	P50, P90, P99, Max time.Duration
}

// scaleOpenResult is one latency run: "open" is until OpenStream
// returned, "first byte" until the node's HTTP answer started.
type scaleOpenResult struct {
	Opens     int            `json:"opens"`
	Errors    int            `json:"errors"`
	FirstErr  string         `json:"first_err,omitempty"`
	Open      scaleQuantiles `json:"open"`
	FirstByte scaleQuantiles `json:"first_byte"`
	Wall      time.Duration  `json:"wall"`
	Error     string         `json:"error,omitempty"`
}

func scaleQuantilesOf(ds []time.Duration) scaleQuantiles {
	if len(ds) == 0 {
		return scaleQuantiles{}
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return scaleQuantiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ds[len(ds)-1]}
}

func scaleMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// scaleRaiseNOFILE lifts the soft open-files limit to the hard one: each
// side holds one TCP connection per node.
func scaleRaiseNOFILE() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// scaleRSS is a process's resident set size in bytes ("self" or a pid).
func scaleRSS(pid string) int64 { return scaleStatus(pid, "VmRSS:") }

// scaleStatus is a figure in kB of a process's /proc status, in bytes.
func scaleStatus(pid, field string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// scaleProcTicks is a process's CPU time in clock ticks: its own user and
// system time plus that of its waited-for children.
func scaleProcTicks(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state is field 3, utime..cstime are 14..17.
	var sum int64
	for _, k := range []int{11, 12, 13, 14} {
		if k < len(f) {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			sum += v
		}
	}
	return sum
}

// scaleBusyTicks is the machine's busy CPU time in clock ticks.
func scaleBusyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var sum int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest (already in user)
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		sum += n
	}
	return sum
}

// scaleClockTick is USER_HZ, 100 on every Linux this runs on.
const scaleClockTick = 100

// TestScaleSupernodeHelper is not a test: it is BenchmarkRelayScale's
// supernode process. It prints its address, then answers one JSON line
// per command read on stdin: "stat", "mem" (after a GC), "open N C",
// "profile FILE", "quit".
func TestScaleSupernodeHelper(t *testing.T) {
	if os.Getenv(scaleHelperEnv) == "" {
		t.Skip("supernode process of BenchmarkRelayScale")
	}
	out := bufio.NewWriter(os.Stdout)
	reply := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(out, "%s%s\n", scaleReplyPrefix, b)
		out.Flush()
	}
	if _, err := scaleRaiseNOFILE(); err != nil {
		t.Logf("raise RLIMIT_NOFILE: %v", err)
	}
	if os.Getenv(scaleProfileEnv) != "" {
		// Fine sampling, so that small per-connection allocations show.
		runtime.MemProfileRate = 4 << 10
	}
	// The supernode as `pc2 supernode` runs it from its config, with
	// max_nodes (dht.Limits sized for them, the relay refusing more).
	peers, _ := strconv.Atoi(os.Getenv(scalePeersEnv))
	seed, err := hex.DecodeString(os.Getenv(scaleSeedEnv))
	if err != nil || len(seed) != ed25519.SeedSize {
		reply(scaleStats{Error: fmt.Sprintf("%s: want a hex seed of %d bytes", scaleSeedEnv, ed25519.SeedSize)})
		return
	}
	n, r, stop, err := scaleRunSupernode(ed25519.NewKeyFromSeed(seed), cmp.Or(os.Getenv(scaleListenEnv), "/ip4/127.0.0.1/tcp/0"), peers)
	if err != nil {
		reply(scaleStats{Error: err.Error()})
		return
	}
	defer stop()
	var connects, disconnects atomic.Int64
	n.Host().Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(network.Network, network.Conn) { connects.Add(1) },
		DisconnectedF: func(network.Network, network.Conn) { disconnects.Add(1) },
	})
	stat := func() scaleStats {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := scaleStats{RSS: scaleRSS("self"), PeakRSS: scaleStatus("self", "VmHWM:"), HeapInuse: int64(ms.HeapInuse), HeapAlloc: int64(ms.HeapAlloc),
			StackInuse: int64(ms.StackInuse), Sys: int64(ms.Sys), Goroutines: runtime.NumGoroutine(),
			Sessions: len(r.Sessions()), Conns: len(n.Host().Network().Conns()),
			Connects: connects.Load(), Disconnects: disconnects.Load()}
		rm := n.Host().Network().ResourceManager()
		rm.ViewSystem(func(s network.ResourceScope) error {
			st.Resources = s.Stat()
			return nil
		})
		if state, ok := rm.(rcmgr.ResourceManagerState); ok {
			st.Streams = map[string]int{}
			for p, ps := range state.Stat().Protocols {
				if k := ps.NumStreamsInbound + ps.NumStreamsOutbound; k > 0 {
					st.Streams[string(p)] = k
				}
			}
		}
		return st
	}
	reply(scaleStats{Addr: n.Multiaddrs()[0].String()})

	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "stat":
			reply(stat())
		case "mem":
			runtime.GC()
			debug.FreeOSMemory()
			reply(stat())
		case "profile":
			if len(f) != 2 {
				reply(scaleStats{Error: "profile FILE"})
				continue
			}
			runtime.GC()
			err := scaleWriteHeapProfile(f[1])
			s := stat()
			if err != nil {
				s.Error = err.Error()
			}
			reply(s)
		case "open":
			if len(f) != 3 {
				reply(scaleOpenResult{Error: "open N C"})
				continue
			}
			nOpens, _ := strconv.Atoi(f[1])
			conc, _ := strconv.Atoi(f[2])
			reply(scaleOpenStreams(r, nOpens, max(conc, 1)))
		case "quit":
			return
		default:
			reply(scaleStats{Error: "unknown command " + f[0]})
		}
	}
}

// scaleRunSupernode runs the supernode as `pc2 supernode` does, from a
// config file: key, listen address and max_nodes as given, a domain, the
// gateway's plain HTTP on loopback, no TURN. It returns its DHT node and
// relay, and stop, which ends it.
func scaleRunSupernode(key ed25519.PrivateKey, listen string, peers int) (*dht.Node, *relayserver.Relay, func(), error) {
	dir, err := os.MkdirTemp("", "pc2-scale-supernode")
	if err != nil {
		return nil, nil, nil, err
	}
	keyFile := filepath.Join(dir, "supernode.key")
	if err := identity.WriteKeyFile(keyFile, key); err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	data, _ := json.Marshal(map[string]any{
		"key_file": keyFile, "data_dir": filepath.Join(dir, "data"), "listen": []string{listen},
		"allow_private_dials": true, "relay_listen_ip": "127.0.0.1", "max_nodes": peers,
		"domains": []map[string]string{{"domain": "pc2.test", "operator": id.DID()}},
		"gateway": map[string]any{"http_listen": "127.0.0.1:0"},
	})
	cfgFile := filepath.Join(dir, "supernode.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	cfg, err := snapp.LoadConfig(cfgFile)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	type running struct {
		n *dht.Node
		r *relayserver.Relay
	}
	up := make(chan running, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- snapp.Run(ctx, cfg, snapp.Options{Running: func(n *dht.Node, r *relayserver.Relay) { up <- running{n, r} }})
	}()
	stop := func() { cancel(); <-done; os.RemoveAll(dir) }
	select {
	case run := <-up:
		return run.n, run.r, stop, nil
	case err := <-done:
		cancel()
		os.RemoveAll(dir)
		return nil, nil, nil, fmt.Errorf("supernode: %w", err)
	}
}

// scaleWriteHeapProfile writes the heap profile to path and the
// goroutines, grouped by stack, to path.goroutines.
func scaleWriteHeapProfile(path string) error {
	for _, p := range []struct {
		name, file string
		debug      int
	}{{"heap", path, 0}, {"goroutine", path + ".goroutines", 1}} {
		f, err := os.Create(p.file)
		if err != nil {
			return err
		}
		if err := pprof.Lookup(p.name).WriteTo(f, p.debug); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// scaleOpenStreams opens n HTTP streams to randomly chosen attached nodes,
// conc at a time; each sends one request and reads the whole answer.
func scaleOpenStreams(r *relayserver.Relay, n, conc int) scaleOpenResult {
	var ids []identity.ID
	for _, s := range r.Sessions() {
		if id, err := identity.ParseDID(s.DID); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return scaleOpenResult{Error: "no node attached"}
	}
	var (
		mu        sync.Mutex
		opens     []time.Duration
		firsts    []time.Duration
		errs      int
		firstErr  string
		remaining atomic.Int64
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs++
		if firstErr == "" {
			firstErr = err.Error()
		}
	}
	remaining.Store(int64(n))
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for remaining.Add(-1) >= 0 {
				open, first, err := scaleOpenOne(r, ids[rand.IntN(len(ids))])
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				opens = append(opens, open)
				firsts = append(firsts, first)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return scaleOpenResult{Opens: len(opens), Errors: errs, FirstErr: firstErr,
		Open: scaleQuantilesOf(opens), FirstByte: scaleQuantilesOf(firsts), Wall: time.Since(start)}
}

func scaleOpenOne(r *relayserver.Relay, id identity.ID) (open, first time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	st, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
	if err != nil {
		return 0, 0, err
	}
	open = time.Since(start)
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(st, "GET / HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"); err != nil {
		st.Reset()
		return 0, 0, fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReader(st)
	if _, err := br.Peek(1); err != nil {
		st.Reset()
		return 0, 0, fmt.Errorf("read answer: %w", err)
	}
	first = time.Since(start)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		st.Reset()
		return 0, 0, fmt.Errorf("read answer: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		st.Reset()
		return 0, 0, fmt.Errorf("answer: %d %v", resp.StatusCode, err)
	}
	return open, first, nil
}

// scaleHelper is the running supernode process.
type scaleHelper struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string
	stderr  *scaleTail
}

// scaleTail keeps the last bytes written to it.
type scaleTail struct {
	mu    sync.Mutex
	buf   []byte
	lines int
}

func (w *scaleTail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines += bytes.Count(p, []byte{'\n'})
	w.buf = append(w.buf, p...)
	if len(w.buf) > 4096 {
		w.buf = w.buf[len(w.buf)-4096:]
	}
	return len(p), nil
}

func (w *scaleTail) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.buf)
}

func (w *scaleTail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d lines on stderr, ending:\n%s", w.lines, w.buf)
}

// scaleStartHelper starts the supernode process with the key of seed
// (hex), listening on listen (empty: a free port).
func scaleStartHelper(b *testing.B, seed, listen string) (*scaleHelper, scaleStats) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleSupernodeHelper$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), scaleHelperEnv+"=1", scalePeersEnv+"="+strconv.Itoa(*scaleNodes), scaleSeedEnv+"="+seed, scaleListenEnv+"="+listen)
	if *scaleHeapProfile != "" {
		cmd.Env = append(cmd.Env, scaleProfileEnv+"=1")
	}
	if *scaleEnv != "" {
		cmd.Env = append(cmd.Env, strings.Split(*scaleEnv, ",")...)
	}
	h := &scaleHelper{cmd: cmd, replies: make(chan string, 1), stderr: &scaleTail{}}
	cmd.Stderr = h.stderr
	var err error
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		h.stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), scaleReplyPrefix); ok {
				h.replies <- s
			}
		}
		close(h.replies)
	}()
	var st scaleStats
	h.read(b, &st, time.Minute)
	if st.Error != "" || st.Addr == "" {
		b.Fatalf("supernode helper: %q (%s)", st.Error, h.stderr)
	}
	return h, st
}

func (h *scaleHelper) read(b *testing.B, v any, timeout time.Duration) {
	b.Helper()
	select {
	case s, ok := <-h.replies:
		if !ok {
			b.Fatalf("supernode helper exited: %s", h.stderr)
		}
		if err := json.Unmarshal([]byte(s), v); err != nil {
			b.Fatalf("supernode helper said %q: %v", s, err)
		}
	case <-time.After(timeout):
		b.Fatalf("supernode helper silent for %v: %s", timeout, h.stderr)
	}
}

func (h *scaleHelper) stats(b *testing.B, cmd string) scaleStats {
	b.Helper()
	fmt.Fprintln(h.stdin, cmd)
	var st scaleStats
	h.read(b, &st, 2*time.Minute)
	if st.Error != "" {
		b.Fatalf("%s: %s", cmd, st.Error)
	}
	return st
}

// quit stops the supernode as `pc2 supernode` stops on SIGTERM: its
// host closes every connection.
func (h *scaleHelper) quit(b *testing.B) {
	fmt.Fprintln(h.stdin, "quit")
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Logf("supernode exited: %v (%s)", err, h.stderr)
		}
	case <-time.After(time.Minute):
		h.cmd.Process.Kill()
		b.Fatalf("supernode did not quit within a minute: %s", h.stderr)
	}
}

// scaleAttachStorm starts the supernode again on the same key and address
// after it quit with attached nodes on it, all of which redial at once
// (each within its client's backoff), and watches until they are back
// or -scale.storm has passed. It returns the new supernode.
func scaleAttachStorm(b *testing.B, nodes []*scaleNode, attached int, seed, listen string) *scaleHelper {
	start := time.Now()
	h, _ := scaleStartHelper(b, seed, listen)
	b.Logf("attach storm: the supernode restarted in %v; %d nodes were attached", time.Since(start).Round(time.Millisecond), attached)
	marks := []float64{0.5, 0.9, 0.99, 1}
	at := map[float64]time.Duration{}
	var st scaleStats
	lastLog := time.Duration(0)
	for {
		st = h.stats(b, "stat")
		el := time.Since(start)
		for _, m := range marks {
			if _, ok := at[m]; !ok && float64(st.Sessions) >= m*float64(attached) {
				at[m] = el
			}
		}
		if el-lastLog >= 5*time.Second {
			lastLog = el
			b.Logf("  +%4.0fs sessions %d, connections %d, connects %d, disconnects %d, goroutines %d, RSS %.1f MB (peak %.1f MB)",
				el.Seconds(), st.Sessions, st.Conns, st.Connects, st.Disconnects, st.Goroutines, float64(st.RSS)/(1<<20), float64(st.PeakRSS)/(1<<20))
		}
		if st.Sessions >= attached || el > *scaleStorm {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, m := range marks {
		if d, ok := at[m]; ok {
			b.Logf("  %3.0f %% of the nodes attached again after %v", 100*m, d.Round(100*time.Millisecond))
			b.ReportMetric(d.Seconds(), fmt.Sprintf("storm-%.0fpct-s", 100*m))
		} else {
			b.Logf("  %3.0f %% of the nodes not attached again within %v", 100*m, *scaleStorm)
		}
	}
	// The nodes' own view: any that gave up or were refused say why.
	var lost int
	why := map[string]int{}
	for _, sn := range nodes {
		if len(sn.client.Attached()) == 0 {
			lost++
			why[sn.client.Status().LastError]++
		}
	}
	b.Logf("  %d sessions at the end (peak RSS %.1f MB during the storm); %d nodes not attached, saying: %v", st.Sessions, float64(st.PeakRSS)/(1<<20), lost, why)
	b.ReportMetric(float64(lost), "storm-not-attached")
	return h
}

func (h *scaleHelper) ticks() int64 { return scaleProcTicks(strconv.Itoa(h.cmd.Process.Pid)) }

// scaleNode is one attached node of the benchmark.
type scaleNode struct {
	node   *dht.Node
	client *Client
	srv    *http.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func scaleStartNode(ai peer.AddrInfo) (*scaleNode, error) {
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient})
	if err != nil {
		return nil, err
	}
	c, err := New(Config{Host: n.Host(), Key: key, Supernodes: []peer.AddrInfo{ai}, MaxAttached: 1})
	if err != nil {
		n.Close()
		return nil, err
	}
	sn := &scaleNode{node: n, client: c, done: make(chan struct{}),
		srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}}
	go sn.srv.Serve(c.Listener())
	ctx, cancel := context.WithCancel(context.Background())
	sn.cancel = cancel
	go func() { c.Run(ctx); close(sn.done) }()
	return sn, nil
}

// waitAttached waits until the node's client reports the supernode.
func (sn *scaleNode) waitAttached(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return sn.client.WaitAttached(ctx) == nil
}

func (sn *scaleNode) stop() {
	sn.cancel()
	<-sn.done
	sn.srv.Close()
	sn.node.Close()
}

// scaleCPU is a CPU-time snapshot: the machine's busy time and this
// process tree's.
type scaleCPU struct {
	at           time.Time
	busy, self   int64
	helper, tree int64
}

func scaleCPUNow(h *scaleHelper) scaleCPU {
	c := scaleCPU{at: time.Now(), busy: scaleBusyTicks(), self: scaleProcTicks("self"), helper: h.ticks()}
	c.tree = c.self + c.helper
	return c
}

// scaleOtherCores is the CPU that processes outside the benchmark's tree
// used between two snapshots, in cores.
func scaleOtherCores(c0, c1 scaleCPU) float64 {
	ticks := (c1.busy - c0.busy) - (c1.tree - c0.tree)
	return max(0, float64(ticks)/scaleClockTick/c1.at.Sub(c0.at).Seconds()) // tick rounding can go below 0
}

// BenchmarkRelayScale attaches -scale.nodes tunnel clients to one
// supernode and measures the supernode's memory per attached node and the
// latency of opening streams to the nodes at that load. The supernode runs
// in its own process (this test binary re-executed as
// TestScaleSupernodeHelper) so that its memory is not mixed with the
// nodes'. It prints what it measured and never fails on a figure.
//
// The supernode's host is the one dht.New builds for a server, the way the
// appliance runs it, with dht's limits for servers (dht.Limits); its
// relay protects attached nodes' connections from the connection manager.
// It runs once whatever b.N: one run takes minutes.
//
// Run it with
//
//	go test ./services/tunnel/ -run '^$' -bench RelayScale -benchtime 1x -v -timeout 30m
func BenchmarkRelayScale(b *testing.B) {
	nofile, err := scaleRaiseNOFILE()
	if err != nil {
		b.Logf("raise RLIMIT_NOFILE: %v", err)
	}
	if need := uint64(*scaleNodes)*2 + 1000; nofile < need {
		b.Logf("RLIMIT_NOFILE is %d, %d nodes want about %d", nofile, *scaleNodes, need)
	}
	var openers []int
	for s := range strings.SplitSeq(*scaleOpeners, ",") {
		if c, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && c > 0 {
			openers = append(openers, c)
		}
	}
	b.Logf("%d nodes, attaching %d at a time; %d CPUs (%s); RLIMIT_NOFILE %d", *scaleNodes, *scaleAttachConc,
		runtime.NumCPU(), scaleCPUModel(), nofile)

	seed := make([]byte, ed25519.SeedSize)
	crand.Read(seed)
	h, hello := scaleStartHelper(b, hex.EncodeToString(seed), "")
	ai, err := peer.AddrInfoFromString(hello.Addr)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	selfBase := scaleRSS("self")
	base := h.stats(b, "mem")
	cpu0 := scaleCPUNow(h)

	// Attach, conc at a time. Once many nodes in a row fail to attach the
	// supernode is refusing them: stop adding more.
	var (
		mu       sync.Mutex
		nodes    []*scaleNode
		failed   atomic.Int64
		inARow   atomic.Int64
		startErr error
		whyNot   string // a node's last error when it did not attach
		wg       sync.WaitGroup
	)
	b.Cleanup(func() {
		start := time.Now()
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		for _, sn := range nodes {
			sem <- struct{}{}
			wg.Go(func() { sn.stop(); <-sem })
		}
		wg.Wait()
		b.Logf("stopped %d nodes in %v", len(nodes), time.Since(start).Round(time.Millisecond))
	})
	giveUp := int64(4 * *scaleAttachConc)
	sem := make(chan struct{}, *scaleAttachConc)
	attachStart := time.Now()
	started := 0
	for ; started < *scaleNodes && inARow.Load() < giveUp; started++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sn, err := scaleStartNode(*ai)
			mu.Lock()
			if err != nil {
				startErr = err
				mu.Unlock()
				return
			}
			nodes = append(nodes, sn)
			mu.Unlock()
			if sn.waitAttached(*scaleAttachWait) {
				inARow.Store(0)
			} else {
				failed.Add(1)
				inARow.Add(1)
				mu.Lock()
				whyNot = sn.client.Status().LastError
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	attachTime := time.Since(attachStart)
	if startErr != nil {
		b.Fatalf("start a node: %v", startErr)
	}
	// The supernode's own view: poll until it holds every attached node.
	want := started - int(failed.Load())
	var full scaleStats
	for end := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		full = h.stats(b, "stat")
		if full.Sessions >= want || time.Now().After(end) {
			break
		}
	}
	b.Logf("started %d nodes, %d attached within %v each, in %v; the supernode holds %d sessions, %d connections", started, want, *scaleAttachWait, attachTime.Round(time.Millisecond), full.Sessions, full.Conns)
	b.Logf("streams by protocol: %s", full.streamsLine())
	if started < *scaleNodes {
		b.Logf("stopped adding nodes after %d in a row failed to attach", giveUp)
	}
	if whyNot != "" {
		b.Logf("a node that did not attach says: %s", whyNot)
	}

	// Watch the sessions past the connection manager's grace period,
	// and what keeping them attached costs while nobody visits: the
	// relay's pings and the supernode's yamux keep-alives.
	obsStart := time.Now()
	idle0 := scaleCPUNow(h)
	for time.Since(obsStart) < *scaleObserve {
		time.Sleep(min(10*time.Second, *scaleObserve-time.Since(obsStart)))
		s := h.stats(b, "stat")
		b.Logf("+%3.0fs sessions %d, connections %d, connects %d, disconnects %d, goroutines %d",
			time.Since(obsStart).Seconds(), s.Sessions, s.Conns, s.Connects, s.Disconnects, s.Goroutines)
	}
	if *scaleObserve > 0 {
		idle1 := scaleCPUNow(h)
		wall := idle1.at.Sub(idle0.at).Seconds()
		super := float64(idle1.helper-idle0.helper) / scaleClockTick / wall
		b.Logf("idle, %d nodes attached, over %.0f s: supernode %.3f cores, nodes %.3f cores", want, wall,
			super, float64(idle1.self-idle0.self)/scaleClockTick/wall)
		b.ReportMetric(super, "idle-supernode-cores")
	}

	runtime.GC()
	debug.FreeOSMemory()
	selfFull := scaleRSS("self")
	mem := h.stats(b, "mem")
	attached := mem.Sessions
	if *scaleHeapProfile != "" {
		path, _ := filepath.Abs(*scaleHeapProfile)
		h.stats(b, "profile "+path)
		b.Logf("supernode heap profile in %s", path)
	}
	perNode := func(after, before int64) float64 {
		if attached == 0 {
			return 0
		}
		return float64(after-before) / float64(attached) / 1024
	}
	b.Logf("supernode memory, %d sessions (%d connections, %d goroutines, baseline %d goroutines):", attached, mem.Conns, mem.Goroutines, base.Goroutines)
	// What libp2p's resource manager counts against the host's limits
	// (dht.Limits): yamux reserves each stream's initial window up front.
	rs := mem.Resources
	b.Logf("  resource manager: %d inbound / %d outbound connections, %d inbound / %d outbound streams, %.1f MB reserved",
		rs.NumConnsInbound, rs.NumConnsOutbound, rs.NumStreamsInbound, rs.NumStreamsOutbound, float64(rs.Memory)/(1<<20))
	b.Logf("  streams by protocol: %s", mem.streamsLine())
	b.Logf("  %-12s %10s %10s %12s", "", "baseline", "loaded", "per node")
	for _, row := range []struct {
		name        string
		before, now int64
	}{
		{"RSS", base.RSS, mem.RSS}, {"heap inuse", base.HeapInuse, mem.HeapInuse},
		{"heap alloc", base.HeapAlloc, mem.HeapAlloc}, {"stacks", base.StackInuse, mem.StackInuse},
		{"Go sys", base.Sys, mem.Sys},
	} {
		b.Logf("  %-12s %8.1f MB %8.1f MB %9.1f KB", row.name, float64(row.before)/(1<<20), float64(row.now)/(1<<20),
			perNode(row.now, row.before))
	}
	nodesUp := len(nodes)
	b.Logf("  nodes' process: %.1f MB -> %.1f MB, %.1f KB per started node", float64(selfBase)/(1<<20), float64(selfFull)/(1<<20),
		float64(selfFull-selfBase)/float64(max(nodesUp, 1))/1024)
	b.ReportMetric(float64(attached), "nodes-attached")
	b.ReportMetric(float64(mem.Disconnects), "disconnects")
	b.ReportMetric(attachTime.Seconds(), "attach-s")
	b.ReportMetric(perNode(mem.RSS, base.RSS), "KB/node-rss")
	b.ReportMetric(perNode(mem.HeapInuse, base.HeapInuse), "KB/node-heap")
	b.ReportMetric(perNode(mem.StackInuse, base.StackInuse), "KB/node-stack")
	b.ReportMetric(float64(selfFull-selfBase)/float64(max(nodesUp, 1))/1024, "KB/node-client-rss")

	for _, c := range openers {
		fmt.Fprintf(h.stdin, "open %d %d\n", *scaleOpens, c)
		var res scaleOpenResult
		before := scaleCPUNow(h)
		h.read(b, &res, 10*time.Minute)
		if res.Error != "" {
			b.Logf("open with %d openers: %s", c, res.Error)
			continue
		}
		// Latency tails follow the machine's other load: say what it was.
		b.Logf("%d opens by %d openers in %v (%.0f/s), %d errors %s; other processes %.2f cores", res.Opens, c,
			res.Wall.Round(time.Millisecond), float64(res.Opens)/res.Wall.Seconds(), res.Errors, res.FirstErr,
			scaleOtherCores(before, scaleCPUNow(h)))
		for _, q := range []struct {
			name string
			q    scaleQuantiles
		}{{"open", res.Open}, {"first byte", res.FirstByte}} {
			b.Logf("  %-10s p50 %7.3f ms  p90 %7.3f ms  p99 %7.3f ms  max %7.3f ms", q.name,
				scaleMs(q.q.P50), scaleMs(q.q.P90), scaleMs(q.q.P99), scaleMs(q.q.Max))
		}
		sfx := fmt.Sprintf("-c%d", c)
		b.ReportMetric(scaleMs(res.Open.P50), "open-p50-ms"+sfx)
		b.ReportMetric(scaleMs(res.Open.P99), "open-p99-ms"+sfx)
		b.ReportMetric(scaleMs(res.FirstByte.P50), "firstbyte-p50-ms"+sfx)
		b.ReportMetric(scaleMs(res.FirstByte.P99), "firstbyte-p99-ms"+sfx)
		b.ReportMetric(float64(res.Errors), "open-errors"+sfx)
	}

	if *scaleStorm > 0 {
		listen := ai.Addrs[0].String()
		h.quit(b)
		h = scaleAttachStorm(b, nodes, attached, hex.EncodeToString(seed), listen)
	}

	cpu1 := scaleCPUNow(h)
	wall := cpu1.at.Sub(cpu0.at).Seconds()
	cores := func(ticks int64) float64 { return float64(ticks) / scaleClockTick / wall }
	other := scaleOtherCores(cpu0, cpu1)
	b.Logf("CPU over %.0f s: supernode %.2f cores, nodes %.2f cores, other processes %.2f cores (of %d)", wall,
		cores(cpu1.helper-cpu0.helper), cores(cpu1.self-cpu0.self), other, runtime.NumCPU())
	b.ReportMetric(other, "other-cpu-cores")
	if h.stderr.Len() > 0 {
		b.Logf("supernode %s", h.stderr)
	}
}

func scaleCPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
