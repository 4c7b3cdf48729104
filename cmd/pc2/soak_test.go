package main

import (
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/pc2/pc2/internal/testing/promtext"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/wrkbench"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/tunnel"
)

// Flags of BenchmarkSoak.
var (
	soakDuration = flag.Duration("soak.duration", time.Hour, "length of the soak")
	soakWarmup   = flag.Duration("soak.warmup", 5*time.Minute, "the start of the soak left out of the flatness figures")
	soakNodes    = flag.Int("soak.nodes", 1000, "nodes attached to the supernode besides alice")
	soakChurn    = flag.Float64("soak.churn", 0.1, "share of the nodes whose link flaps each minute")
	soakFlap     = flag.Duration("soak.flap", 2*time.Second, "how long a flapping node stays away")
	soakRate     = flag.Float64("soak.rate", 0, "visitors' requests per second to alice through the gateway (0: half of the capacity wrk measures at the start, 50 connections)")
	soakNames    = flag.Duration("soak.names", 20*time.Second, "a name is claimed, and the oldest of 20 released, this often (the names API's default of 200 new names a day bounds an hour to 180)")
	soakSampleAt = flag.Duration("soak.sample", 10*time.Second, "how often the supernode's metrics are read")
	soakOut      = flag.String("soak.out", "", "write samples.csv and the panels as PNGs into this directory (docs/soak for the committed figures)")
)

// BenchmarkSoak (issue 21) runs the product's supernode for
// -soak.duration as an operator runs it, under the load of a busy day:
// `pc2 supernode` from its config (DHT, relay, gateway, names API,
// metrics) with alice's `pc2 node` relayed through it (as in
// BenchmarkRealPath), -soak.nodes more nodes attached (tunnel clients in
// this process), a tenth of which lose their link each minute (gone for
// -soak.flap, then attached again), visitors fetching alice's public file
// through the gateway at half its measured capacity (an open-loop load:
// requests leave at the rate whatever the answers do), and names claimed
// and released at the names API (from a rotating loopback address, as
// owners come from many). Every -soak.sample it reads the supernode's
// own metrics (resident memory, goroutines, open descriptors, attached
// nodes, gateway requests). It prints whether memory, goroutines and
// descriptors stayed within 5 % after the warm-up, the visitors' requests
// lost (alice never flaps: every failed request counts), and writes the
// samples and the Grafana dashboard's main panels as PNGs with
// -soak.out. It never fails on a figure.
//
//	go test ./cmd/pc2/ -run '^$' -bench Soak -benchtime 1x -timeout 90m -soak.out ../../docs/soak
func BenchmarkSoak(b *testing.B) {
	dir := b.TempDir()
	bin := buildPC2(b)
	metricsPort := rpFreePort(b)
	e := rpStart(b, bin, dir, func(sn, _ map[string]any) { sn["metrics_listen"] = "127.0.0.1:" + metricsPort })
	url := "http://alice.pc2.test:" + e.gwPort + "/hello.txt"
	rpCheck(b, url, nil)
	metrics := "http://127.0.0.1:" + metricsPort + "/metrics"

	rate := *soakRate
	if rate <= 0 {
		wrk, err := exec.LookPath("wrk")
		if err != nil {
			testenv.SkipOrFail(b, "no wrk to measure the gateway's capacity (or give -soak.rate): %v", err)
		}
		script, err := wrkbench.WriteScript(dir)
		if err != nil {
			b.Fatal(err)
		}
		res, out, err := wrkbench.Run(wrk, script, wrkbench.Load{URL: url, Conns: 50, Duration: 10 * time.Second})
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		rate = res.RPS() / 2
		b.Logf("gateway capacity: %.0f req/s at 50 connections (p99 %v); the soak's load: %.0f req/s", res.RPS(), res.P99, rate)
	}

	ai, err := peer.AddrInfoFromString(e.sn.addr(b, "tcp"))
	if err != nil {
		b.Fatal(err)
	}
	nodes := soakAttach(b, *ai, *soakNodes)
	b.Logf("%d nodes attached besides alice", len(nodes))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	load := &soakLoad{url: url, rate: rate}
	wg.Go(func() { load.run(ctx) })
	churn := &soakFlaps{}
	wg.Go(func() { churn.run(ctx, nodes) })
	names := &soakNameChurn{api: e.api}
	wg.Go(func() { names.run(ctx, nodes) })

	start := time.Now()
	var samples []soakSample
	var lastReqs float64
	if m, err := promtext.Scrape(metrics); err == nil {
		lastReqs = m["pc2_gateway_requests_total"]
	}
	ticker := time.NewTicker(*soakSampleAt)
	for time.Since(start) < *soakDuration {
		<-ticker.C
		m, err := promtext.Scrape(metrics)
		if err != nil {
			b.Logf("metrics: %v", err)
			continue
		}
		w := load.window()
		reqs := m["pc2_gateway_requests_total"]
		s := soakSample{At: time.Since(start), RSS: m["process_resident_memory_bytes"], Goroutines: m["go_goroutines"],
			FDs: m["process_open_fds"], Attached: m["pc2_relay_attached_nodes"], GatewayRPS: (reqs - lastReqs) / soakSampleAt.Seconds(),
			Sent: w.sent, OK: w.ok, Failed: w.failed, Skipped: w.skipped, P50: w.p50, P99: w.p99,
			Flaps: churn.flaps.Load(), Claims: names.claims.Load(), Releases: names.releases.Load()}
		lastReqs = reqs
		samples = append(samples, s)
		if len(samples)%6 == 0 {
			b.Logf("+%5.1f min: RSS %.1f MB, goroutines %.0f, fds %.0f, attached %.0f, %.0f req/s (%d failed, p99 %v), flaps %d, names %d/%d",
				s.At.Minutes(), s.RSS/(1<<20), s.Goroutines, s.FDs, s.Attached, s.GatewayRPS, s.Failed, s.P99, s.Flaps, s.Claims, s.Releases)
		}
	}
	ticker.Stop()
	cancel()
	wg.Wait()

	tot := load.totals()
	fmt.Printf("\nsoak (issue 21): %v, %d nodes besides alice, %.0f %% flapping each minute (%v away), %.0f req/s to alice through the gateway\n",
		*soakDuration, len(nodes), 100**soakChurn, *soakFlap, rate)
	fmt.Printf("visitors' requests: %d sent, %d answered 200, %d failed (lost), %d not sent (the load generator behind)", tot.sent, tot.ok, tot.failed, tot.skipped)
	if tot.firstErr != "" {
		fmt.Printf("; first failure: %s", tot.firstErr)
	}
	fmt.Printf("\nlink flaps: %d, reattached p50 %v, p99 %v, not back within a minute: %d\n", churn.flaps.Load(),
		churn.quantile(0.5), churn.quantile(0.99), churn.lost.Load())
	fmt.Printf("names: %d claimed, %d released, %d refused (first: %s)\n", names.claims.Load(), names.releases.Load(), names.failed.Load(), names.firstErr())
	for _, f := range soakFlatness(samples, *soakWarmup) {
		fmt.Println(f)
	}
	if *soakOut != "" {
		if err := soakWrite(*soakOut, samples); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("samples and panels in %s\n", *soakOut)
	}
}

// soakSample is one reading: the supernode's metrics and the visitors'
// requests of the window since the last one.
type soakSample struct {
	At                             time.Duration
	RSS, Goroutines, FDs, Attached float64
	GatewayRPS                     float64
	Sent, OK, Failed, Skipped      int64
	P50, P99                       time.Duration
	Flaps, Claims, Releases        int64
}

// soakNode is one attached node: a DHT client and a tunnel client in
// this process, serving "ok" on its relayed listener.
type soakNode struct {
	key  ed25519.PrivateKey
	ai   peer.AddrInfo
	stop func()
	c    *tunnel.Client
}

func (n *soakNode) start() error {
	d, err := dht.New(context.Background(), dht.Config{Key: n.key, Mode: dht.ModeClient})
	if err != nil {
		return err
	}
	c, err := tunnel.New(tunnel.Config{Host: d.Host(), Key: n.key, Supernodes: []peer.AddrInfo{n.ai}, MaxAttached: 1})
	if err != nil {
		d.Close()
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(c.Listener())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	n.c = c
	n.stop = func() { cancel(); <-done; srv.Close(); d.Close() }
	return nil
}

// attached waits up to timeout for the node's supernode.
func (n *soakNode) attached(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.c.WaitAttached(ctx) == nil
}

// soakAttach starts count nodes, 50 at a time, and waits until each is
// attached.
func soakAttach(b *testing.B, ai peer.AddrInfo, count int) []*soakNode {
	nodes := make([]*soakNode, count)
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range nodes {
		_, key, _ := ed25519.GenerateKey(nil)
		n := &soakNode{key: key, ai: ai}
		nodes[i] = n
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := n.start(); err != nil || !n.attached(30*time.Second) {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	b.Cleanup(func() {
		for _, n := range nodes {
			if n.stop != nil {
				n.stop()
				n.stop = func() {}
			}
		}
	})
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d nodes did not attach", f, count)
	}
	return nodes
}

// soakFlaps flaps -soak.churn of the nodes each minute, each at a random
// moment of it: the node goes away (its connection closed) and comes
// back after -soak.flap; how long it takes to attach again is kept.
type soakFlaps struct {
	flaps, lost atomic.Int64
	mu          sync.Mutex
	reattach    []time.Duration
}

func (c *soakFlaps) run(ctx context.Context, nodes []*soakNode) {
	var wg sync.WaitGroup
	defer wg.Wait()
	busy := make([]atomic.Bool, len(nodes))
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		k := max(0, min(len(nodes), int(float64(len(nodes))**soakChurn)))
		for _, i := range rand.Perm(len(nodes))[:k] {
			if !busy[i].CompareAndSwap(false, true) {
				continue
			}
			wg.Go(func() {
				defer busy[i].Store(false)
				select {
				case <-time.After(rand.N(time.Minute)):
				case <-ctx.Done():
					return
				}
				n := nodes[i]
				n.stop()
				time.Sleep(*soakFlap)
				back := time.Now()
				if err := n.start(); err != nil {
					n.stop = func() {}
					c.lost.Add(1)
					return
				}
				c.flaps.Add(1)
				if !n.attached(time.Minute) {
					c.lost.Add(1)
					return
				}
				c.mu.Lock()
				c.reattach = append(c.reattach, time.Since(back))
				c.mu.Unlock()
			})
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (c *soakFlaps) quantile(q float64) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return soakQuantile(c.reattach, q)
}

func soakQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond)
}

// soakNameChurn claims a new name for one of the nodes every
// -soak.names and releases the oldest once 20 are held, each from its own
// loopback address (the names API limits new names per address).
type soakNameChurn struct {
	api                      string
	claims, releases, failed atomic.Int64
	mu                       sync.Mutex
	first                    string
}

func (s *soakNameChurn) firstErr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

func (s *soakNameChurn) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the soak ended
	}
	s.failed.Add(1)
	s.mu.Lock()
	if s.first == "" {
		s.first = err.Error()
	}
	s.mu.Unlock()
}

func (s *soakNameChurn) run(ctx context.Context, nodes []*soakNode) {
	type held struct {
		name string
		key  ed25519.PrivateKey
	}
	if len(nodes) == 0 {
		return
	}
	var fifo []held
	tick := time.NewTicker(*soakNames)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		from := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250%250), byte(2+i%250))}
		c := &namesapi.Client{API: s.api, HTTP: &http.Client{Timeout: 30 * time.Second,
			Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: from}).DialContext}}}
		h := held{name: fmt.Sprintf("soak-%d.pc2.test", i), key: nodes[i%len(nodes)].key}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := c.Claim(cctx, h.key, h.name, ""); err != nil {
			s.fail(ctx, fmt.Errorf("claim %s: %w", h.name, err))
		} else {
			s.claims.Add(1)
			fifo = append(fifo, h)
		}
		if len(fifo) > 20 {
			old := fifo[0]
			fifo = fifo[1:]
			if _, err := c.Release(cctx, old.key, old.name); err != nil {
				s.fail(ctx, fmt.Errorf("release %s: %w", old.name, err))
			} else {
				s.releases.Add(1)
			}
		}
		cancel()
	}
}

// soakLoad sends GETs of url at rate per second whatever the answers do
// (up to 512 in flight; a request that finds them all busy is counted
// as not sent) and counts the answers.
type soakLoad struct {
	url  string
	rate float64

	mu     sync.Mutex
	lat    []time.Duration
	w, all soakCounts
}

type soakCounts struct {
	sent, ok, failed, skipped int64
	p50, p99                  time.Duration
	firstErr                  string
}

func (l *soakLoad) run(ctx context.Context) {
	const workers = 512
	u, err := neturl.Parse(l.url)
	if err != nil {
		panic(err) // built by BenchmarkSoak
	}
	port := u.Port()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
		}}}
	jobs := make(chan struct{}, workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range workers {
		wg.Go(func() {
			for range jobs {
				l.one(client)
			}
		})
	}
	defer close(jobs)
	const step = 10 * time.Millisecond
	tick := time.NewTicker(step)
	defer tick.Stop()
	var owed float64
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		owed += l.rate * step.Seconds()
		for ; owed >= 1; owed-- {
			select {
			case jobs <- struct{}{}:
			default:
				l.mu.Lock()
				l.w.skipped++
				l.mu.Unlock()
			}
		}
	}
}

func (l *soakLoad) one(client *http.Client) {
	start := time.Now()
	resp, err := client.Get(l.url)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || string(body) != rpBody) {
			err = fmt.Errorf("%s: %.100q", resp.Status, body)
		}
	}
	d := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.sent++
	if err != nil {
		l.w.failed++
		if l.all.firstErr == "" {
			l.all.firstErr = fmt.Sprintf("after %v: %v", d.Round(time.Millisecond), err)
		}
		return
	}
	l.w.ok++
	l.lat = append(l.lat, d)
}

// window returns the counts since the last call and starts a new window.
func (l *soakLoad) window() soakCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.w
	w.p50, w.p99 = soakQuantile(l.lat, 0.5), soakQuantile(l.lat, 0.99)
	l.all.sent += w.sent
	l.all.ok += w.ok
	l.all.failed += w.failed
	l.all.skipped += w.skipped
	l.w, l.lat = soakCounts{}, l.lat[:0]
	return w
}

func (l *soakLoad) totals() soakCounts {
	l.window()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all
}

// soakFlatness compares the first and the last ten minutes after the
// warm-up (a quarter each of a shorter soak): the issue asks for memory,
// goroutines and descriptors within 5 %.
func soakFlatness(samples []soakSample, warmup time.Duration) []string {
	var after []soakSample
	for _, s := range samples {
		if s.At >= warmup {
			after = append(after, s)
		}
	}
	if len(after) < 4 {
		return []string{"flatness: too few samples after the warm-up"}
	}
	span := after[len(after)-1].At - after[0].At
	win := min(10*time.Minute, span/4)
	mean := func(from, to time.Duration, f func(soakSample) float64) float64 {
		var sum float64
		var k int
		for _, s := range after {
			if s.At >= from && s.At <= to {
				sum += f(s)
				k++
			}
		}
		return sum / float64(max(k, 1))
	}
	first, last := after[0].At, after[len(after)-1].At
	var out []string
	for _, m := range []struct {
		name string
		f    func(soakSample) float64
	}{
		{"supernode RSS (MB)", func(s soakSample) float64 { return s.RSS / (1 << 20) }},
		{"goroutines", func(s soakSample) float64 { return s.Goroutines }},
		{"open descriptors", func(s soakSample) float64 { return s.FDs }},
	} {
		a, z := mean(first, first+win, m.f), mean(last-win, last, m.f)
		verdict := "flat within 5 %"
		if z > a*1.05 || z < a*0.95 {
			verdict = "NOT within 5 %"
		}
		out = append(out, fmt.Sprintf("%-20s first %v after warm-up %.1f, last %v %.1f: %+.1f %% (%s)", m.name, win.Round(time.Second), a, win.Round(time.Second), z, 100*(z-a)/a, verdict))
	}
	return out
}

// soakWrite writes samples.csv and the panels (the Grafana dashboard's
// supernode panels, docs/grafana/pc2.json) as PNGs into dir.
func soakWrite(dir string, samples []soakSample) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "samples.csv"))
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"seconds", "rss_bytes", "goroutines", "open_fds", "attached_nodes", "gateway_rps", "sent", "ok", "failed", "not_sent", "p50_ms", "p99_ms", "flaps", "claims", "releases"})
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
	g := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, s := range samples {
		w.Write([]string{g(s.At.Seconds()), g(s.RSS), g(s.Goroutines), g(s.FDs), g(s.Attached), g(s.GatewayRPS), i(s.Sent), i(s.OK), i(s.Failed), i(s.Skipped),
			ms(s.P50), ms(s.P99), i(s.Flaps), i(s.Claims), i(s.Releases)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	panels := []struct {
		file, title, unit string
		series            []string
		values            []func(soakSample) float64
	}{
		{"memory.png", "Supernode resident memory", "MB", []string{"RSS"}, []func(soakSample) float64{func(s soakSample) float64 { return s.RSS / (1 << 20) }}},
		{"goroutines.png", "Supernode goroutines", "goroutines", []string{"goroutines"}, []func(soakSample) float64{func(s soakSample) float64 { return s.Goroutines }}},
		{"descriptors.png", "Supernode open file descriptors", "descriptors", []string{"open"}, []func(soakSample) float64{func(s soakSample) float64 { return s.FDs }}},
		{"attached.png", "Attached nodes", "nodes", []string{"attached"}, []func(soakSample) float64{func(s soakSample) float64 { return s.Attached }}},
		{"requests.png", "Gateway requests", "requests/s", []string{"gateway (all answers)", "visitors answered 200", "visitors failed"}, []func(soakSample) float64{
			func(s soakSample) float64 { return s.GatewayRPS },
			func(s soakSample) float64 { return float64(s.OK) / soakSampleAt.Seconds() },
			func(s soakSample) float64 { return float64(s.Failed) / soakSampleAt.Seconds() }}},
		{"latency.png", "Visitors' request latency", "ms", []string{"p50", "p99"}, []func(soakSample) float64{
			func(s soakSample) float64 { return float64(s.P50) / 1e6 },
			func(s soakSample) float64 { return float64(s.P99) / 1e6 }}},
	}
	for _, p := range panels {
		pl := plot.New()
		pl.Title.Text = p.title
		pl.X.Label.Text = "minutes"
		pl.Y.Label.Text = p.unit
		pl.Y.Min = 0
		var lines []any
		for k, name := range p.series {
			pts := make(plotter.XYs, len(samples))
			for j, s := range samples {
				pts[j].X, pts[j].Y = s.At.Minutes(), p.values[k](s)
			}
			lines = append(lines, name, pts)
		}
		if err := plotutil.AddLines(pl, lines...); err != nil {
			return err
		}
		if err := pl.Save(8*vg.Inch, 3*vg.Inch, filepath.Join(dir, p.file)); err != nil {
			return err
		}
	}
	return nil
}
