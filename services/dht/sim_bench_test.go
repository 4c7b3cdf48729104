//go:build unix

package dht

import (
	"context"
	"encoding/base32"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// The simulated network: supernodes on a libp2p mocknet where every link
// delays each write by simLinkLatency, so a request and its answer take a
// 20 ms round trip. The workload is fixed (run with -benchtime 1x); the
// figures are the per-operation latencies measured with the clock, reported
// with b.ReportMetric and logged as a table. docs/benchmarks.md explains the
// method and holds the figures.
const (
	simLinkLatency = 10 * time.Millisecond // one way
	// simBootstrapPeers is how many well-known supernodes every node is
	// configured with, as in a real deployment's bootstrap list.
	simBootstrapPeers = 4
	// simJoinParallel nodes join at the same time.
	simJoinParallel = 32
	simRPCs         = 200
	simPuts         = 200
	simGets         = 500
	// simParallel operations are in flight at once (a supernode network
	// serves many clients at the same time; 2 cores cannot simulate many).
	simParallel = 4
	simBucket   = 20 // kad-dht's default bucket size (K)
)

// simGC keeps the garbage collector running during the measured
// operations. By default it is paused for them (and run between phases):
// one collection here scans every simulated node's heap at once and
// delays all of them together, which a real network of separate
// processes does not do. docs/benchmarks.md gives figures both ways.
var simGC = flag.Bool("sim.gc", false, "keep the garbage collector running while sim benchmarks measure")

// simAlpha, when set, replaces kad-dht's lookup concurrency (alpha,
// default 10) on every node: an experiment docs/benchmarks.md reports.
var simAlpha = flag.Int("sim.alpha", 0, "kad-dht lookup concurrency for sim benchmarks (0: kad-dht default)")

// simProfile, when set, is a directory to write one CPU profile per
// measured phase to (the whole run's -cpuprofile is mostly setup).
var simProfile = flag.String("sim.cpuprofile", "", "directory for per-phase CPU profiles of sim benchmarks")

// simHeadroom is how much a measured phase may allocate before the paused
// collector runs anyway.
const simHeadroom = 6 << 30

// simQuorums are the GetQuorum values compared; 0 is the full lookup.
var simQuorums = []int{0, 1, 2, 3}

func BenchmarkSimNetwork100(b *testing.B) { benchSimNetwork(b, 100) }
func BenchmarkSimNetwork500(b *testing.B) { benchSimNetwork(b, 500) }

func benchSimNetwork(b *testing.B, n int) {
	setupStart := time.Now()
	// The simulation's own garbage (n nodes in one process) is not what a
	// supernode pays; collect less often while the network forms.
	gc := debug.SetGCPercent(200)
	s := newSimNet(b, n)
	debug.SetGCPercent(gc)
	rtMean, rtMin, rtMax := s.routingTableSizes()
	nearMean, nearMin := s.neighbourhoods()
	b.Logf("setup: %d supernodes joined via %d bootstrap peers in %v; routing table size mean %.1f, min %d, max %d; own %d nearest peers known: mean %.1f%%, min %.0f%%",
		n, simBootstrapPeers, time.Since(setupStart).Round(time.Millisecond), rtMean, rtMin, rtMax, simBucket, nearMean, nearMin)
	settle := time.Now()
	cpu := s.settle(5*time.Second, 30*time.Second)
	b.Logf("settled in %v: background CPU %.0f%% of one core", time.Since(settle).Round(time.Millisecond), 100*cpu)

	var (
		published []simRecord
		puts      []opResult
		rpcs      []opResult
		placement float64
		gets      = map[int][]opResult{}
	)
	b.Run("rpc", func(b *testing.B) {
		var rs []opResult
		for b.Loop() {
			s.measure(b, func() {
				rs = append(rs, s.runOps(simRPCs, func(i int, rng *rand.Rand) opResult {
					a := rng.IntN(n)
					rt := s.nodes[a].DHT().RoutingTable().ListPeers()
					return s.rpc(a, s.byID[rt[rng.IntN(len(rt))]])
				})...)
			})
		}
		rpcs = rs
		sum := summarize(rs)
		b.ReportMetric(ms(sum.p50), "rpc-p50-ms")
		b.ReportMetric(ms(sum.p99), "rpc-p99-ms")
	})
	b.Run("put", func(b *testing.B) {
		for b.Loop() {
			recs := signSimRecords(b, len(published), simPuts)
			var res []opResult
			s.measure(b, func() {
				res = s.runOps(len(recs), func(i int, rng *rand.Rand) opResult {
					return s.put(rng.IntN(n), recs[i])
				})
			})
			published = append(published, recs...)
			puts = append(puts, res...)
		}
		reportPuts(b, puts)
		placement = s.placement(published)
		b.ReportMetric(placement, "put-placement-%")
	})
	if len(published) == 0 {
		b.Fatal("nothing published")
	}
	for _, q := range simQuorums {
		b.Run(fmt.Sprintf("get-quorum=%d", q), func(b *testing.B) {
			s.setQuorum(q)
			for b.Loop() {
				s.measure(b, func() {
					gets[q] = append(gets[q], s.runOps(simGets, func(i int, rng *rand.Rand) opResult {
						return s.get(rng, published[rng.IntN(len(published))])
					})...)
				})
			}
			reportGets(b, gets[q])
		})
	}
	b.Logf("%d supernodes, %v link round trip, %d ops in flight; after the puts %.1f%% of the %d nodes nearest each key held it:\n%s",
		n, 2*simLinkLatency, simParallel, placement, simBucket, simTable(rpcs, puts, gets))
}

// simNet is a set of supernodes on one mocknet.
type simNet struct {
	tb     testing.TB
	mn     mocknet.Mocknet
	nodes  []*Node
	stores []ds.Datastore
	byID   map[peer.ID]int
}

type simRecord struct {
	key   string
	value []byte
}

func newSimNet(tb testing.TB, n int) *simNet {
	tb.Helper()
	s := &simNet{tb: tb, mn: mocknet.New(), byID: map[peer.ID]int{}}
	tb.Cleanup(func() {
		for _, nd := range s.nodes {
			nd.Close()
		}
		s.mn.Close()
	})
	s.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: simLinkLatency})
	ids := make([]peer.ID, n)
	for i := range n {
		sk, err := crypto.UnmarshalEd25519PrivateKey(testKey(fmt.Sprint("sim-supernode-", i)))
		if err != nil {
			tb.Fatal(err)
		}
		addr := ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/udp/%d/quic-v1", i>>16&0xff, i>>8&0xff, i&0xff, DefaultQUICPort))
		h, err := s.mn.AddPeer(sk, addr)
		if err != nil {
			tb.Fatal(err)
		}
		ids[i] = h.ID()
		s.byID[h.ID()] = i
	}
	// Links are the internet: any two supernodes can reach each other.
	// Connections are made only by the DHT itself.
	for i := range n {
		for j := i + 1; j < n; j++ {
			if _, err := s.mn.LinkPeers(ids[i], ids[j]); err != nil {
				tb.Fatal(err)
			}
		}
	}
	var boot []peer.AddrInfo
	for i := range min(simBootstrapPeers, n) {
		h := s.mn.Host(ids[i])
		boot = append(boot, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	var opts []kaddht.Option
	if *simAlpha > 0 {
		opts = append(opts, kaddht.Concurrency(*simAlpha))
	}
	for i := range n {
		st := dssync.MutexWrap(ds.NewMapDatastore())
		nd, err := New(context.Background(), Config{
			Host:              s.mn.Host(ids[i]),
			Mode:              ModeServer,
			Bootstrap:         boot,
			Datastore:         st,
			ReplicateInterval: -1,
			Logger:            testLogger(tb),
			DHTOptions:        opts,
		})
		if err != nil {
			tb.Fatal(err)
		}
		s.nodes = append(s.nodes, nd)
		s.stores = append(s.stores, st)
	}

	// The bootstrap nodes come up first, then everyone else joins, a few
	// at a time, through them. Joining is what a starting supernode does:
	// connect to the bootstrap list, then one routing-table refresh (a
	// lookup of its own ID and of a random ID in every bucket).
	join := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		nd := s.nodes[i]
		if err := nd.Bootstrap(ctx); err != nil {
			tb.Errorf("node %d: %v", i, err)
			return
		}
		if err := <-nd.DHT().RefreshRoutingTable(); err != nil {
			tb.Logf("node %d: refresh: %v", i, err)
		}
	}
	for i := range len(boot) {
		join(i)
	}
	s.parallel(len(boot), n, simJoinParallel, join)
	if tb.Failed() {
		tb.FailNow()
	}
	return s
}

// measure runs f, a measured phase, after a collection and (unless
// -sim.gc) with the collector paused: the memory limit is set to what the
// process holds plus simHeadroom, so the collector only runs if the phase
// allocates more than that. It logs the phase's CPU time, the CPU other
// processes on the machine used meanwhile (they disturb the timings),
// allocation and collections.
func (s *simNet) measure(b *testing.B, f func()) {
	b.StopTimer()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if !*simGC {
		defer debug.SetGCPercent(debug.SetGCPercent(-1))
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(m0.Sys-m0.HeapReleased) + simHeadroom))
	}
	if *simProfile != "" {
		name := filepath.Join(*simProfile, strings.NewReplacer("/", "_", "=", "").Replace(b.Name())+".prof")
		pf, err := os.Create(name)
		if err != nil {
			b.Fatal(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	b.StartTimer()
	cpu0, busy0, t0 := processCPU(), machineBusy(), time.Now()
	f()
	wall, cpu, busy := time.Since(t0), processCPU()-cpu0, machineBusy()-busy0
	runtime.ReadMemStats(&m1)
	b.Logf("phase: %v wall, %v CPU (%.2f cores), other processes %.2f cores, %d MB allocated, %d collections; before: heap %d MB, stacks %d MB, %d goroutines",
		wall.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(cpu)/float64(wall), float64(max(0, busy-cpu))/float64(wall),
		(m1.TotalAlloc-m0.TotalAlloc)>>20, m1.NumGC-m0.NumGC, m0.HeapAlloc>>20, m0.StackInuse>>20, runtime.NumGoroutine())
}

// machineBusy is the CPU time all processes have used (Linux /proc/stat;
// 0 elsewhere).
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parallel runs f(i) for i in [from, to) with at most limit at once.
func (s *simNet) parallel(from, to, limit int, f func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := from; i < to; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

func (s *simNet) routingTableSizes() (mean float64, lo, hi int) {
	lo = len(s.nodes)
	for _, nd := range s.nodes {
		sz := nd.DHT().RoutingTable().Size()
		mean += float64(sz)
		lo, hi = min(lo, sz), max(hi, sz)
	}
	return mean / float64(len(s.nodes)), lo, hi
}

// placement is the share (percent) of the simBucket nodes nearest to each
// record's key that hold the record: 100 means every put reached exactly
// the nodes a perfect Kademlia would pick.
func (s *simNet) placement(recs []simRecord) float64 {
	all := make([]peer.ID, len(s.nodes))
	for i, nd := range s.nodes {
		all[i] = nd.host.ID()
	}
	held, total := 0, 0
	for _, r := range recs {
		h := s.holders(r.key)
		near := kb.SortClosestPeers(slices.Clone(all), kb.ConvertKey(r.key))
		for _, p := range near[:min(simBucket, len(near))] {
			total++
			if h[s.byID[p]] {
				held++
			}
		}
	}
	return 100 * float64(held) / float64(max(total, 1))
}

// neighbourhoods says how much of each node's true neighbourhood (the
// simBucket nodes nearest to it in XOR distance) is in its routing table:
// the mean and the minimum over all nodes, in percent.
func (s *simNet) neighbourhoods() (mean, lo float64) {
	all := make([]peer.ID, len(s.nodes))
	for i, nd := range s.nodes {
		all[i] = nd.host.ID()
	}
	lo = 100
	for i, nd := range s.nodes {
		near := kb.SortClosestPeers(slices.Delete(slices.Clone(all), i, i+1), kb.ConvertPeerID(all[i]))
		near = near[:min(simBucket, len(near))]
		known := 0
		for _, p := range near {
			if nd.DHT().RoutingTable().Find(p) != "" {
				known++
			}
		}
		pct := 100 * float64(known) / float64(len(near))
		mean += pct
		lo = min(lo, pct)
	}
	return mean / float64(len(s.nodes)), lo
}

// settle waits (at most maxWait) until the process uses less than 5% of a
// core over a second, so that setup work does not compete with the
// measured operations, and returns the last CPU use seen.
func (s *simNet) settle(minWait, maxWait time.Duration) float64 {
	deadline := time.Now().Add(maxWait)
	time.Sleep(minWait)
	for {
		cpu := s.cpuUse(time.Second)
		if cpu < 0.05 || time.Now().After(deadline) {
			return cpu
		}
	}
}

// cpuUse is the process's CPU use (in cores) over d.
func (s *simNet) cpuUse(d time.Duration) float64 {
	c0, t0 := processCPU(), time.Now()
	time.Sleep(d)
	return float64(processCPU()-c0) / float64(time.Since(t0))
}

func (s *simNet) setQuorum(q int) {
	if q == 0 {
		q = FullLookup
	}
	for _, nd := range s.nodes {
		nd.cfg.GetQuorum = q
	}
}

// storeKey is where kad-dht's value store files a record: "/<namespace>/"
// + unpadded base32 of the whole key. put checks that this still holds.
func storeKey(key string) ds.Key {
	ns, _, _ := record.SplitKey(key)
	return ds.NewKey("/" + ns + "/" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(key)))
}

// holders are the nodes that have key in their local store now.
func (s *simNet) holders(key string) map[int]bool {
	k := storeKey(key)
	out := map[int]bool{}
	for i, st := range s.stores {
		if ok, _ := st.Has(context.Background(), k); ok {
			out[i] = true
		}
	}
	return out
}

// signSimRecords signs n typical did records (see typicalDID), numbered
// from first.
func signSimRecords(tb testing.TB, first, n int) []simRecord {
	tb.Helper()
	now, super := time.Now(), testKey("sim-supernode-0")
	recs := make([]simRecord, n)
	for i := range recs {
		recs[i].key, recs[i].value = typicalDID(tb, first+i, super, now)
	}
	return recs
}

// opResult is one timed put or get.
type opResult struct {
	d        time.Duration
	ok       bool
	err      error
	hops     int // gets: lookup depth of the first peer that answered with the record (0: none)
	queried  int // gets: peers sent a query
	replicas int // puts: peers that confirmed they store the record
	holders  int // gets: nodes that held the record when the get started
}

// runOps runs n operations, simParallel at a time; op i gets its own
// deterministic random source, the same in every phase, so the quorums are
// compared on the same sequence of keys and getters.
func (s *simNet) runOps(n int, op func(i int, rng *rand.Rand) opResult) []opResult {
	res := make([]opResult, n)
	s.parallel(0, n, simParallel, func(i int) {
		res[i] = op(i, rand.New(rand.NewPCG(uint64(len(s.nodes)), uint64(i))))
	})
	return res
}

// put publishes rec from node i the way the product does (Publish =
// PutVerified: lookup, store on the closest peers, confirm with each).
func (s *simNet) put(i int, rec simRecord) opResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	res, err := s.nodes[i].PutVerified(ctx, rec.key, rec.value)
	r := opResult{d: time.Since(start), ok: err == nil, err: err, replicas: res.Stored}
	if ok, _ := s.stores[i].Has(ctx, storeKey(rec.key)); !ok && err == nil {
		s.tb.Errorf("node %d put %s but it is not in its store under %s: storeKey is out of date", i, rec.key, storeKey(rec.key))
	}
	return r
}

// rpc sends one FIND_NODE request from node a to node b (a peer in a's
// routing table, so already connected) on a new stream and waits for the
// answer: the simulator's floor for one request.
func (s *simNet) rpc(a, b int) opResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pm, err := pb.NewProtocolMessenger(sender{s.nodes[a].host})
	if err != nil {
		return opResult{err: err}
	}
	start := time.Now()
	_, err = pm.GetClosestPeers(ctx, s.nodes[b].host.ID(), s.nodes[a].host.ID())
	return opResult{d: time.Since(start), ok: err == nil, err: err}
}

// get resolves rec from a random node that does not hold it, tracing the
// lookup to count hops.
func (s *simNet) get(rng *rand.Rand, rec simRecord) opResult {
	holders := s.holders(rec.key)
	if len(holders) == len(s.nodes) {
		return opResult{err: fmt.Errorf("every node holds %s", rec.key)}
	}
	g := rng.IntN(len(s.nodes))
	for holders[g] {
		g = rng.IntN(len(s.nodes))
	}
	nd := s.nodes[g]
	tr := &hopTracer{
		seeds:   map[peer.ID]bool{},
		depth:   map[peer.ID]int{},
		heard:   map[peer.ID]int{},
		holders: map[peer.ID]bool{},
	}
	for _, p := range nd.DHT().RoutingTable().NearestPeers(kb.ConvertKey(rec.key), simBucket) {
		tr.seeds[p] = true
	}
	for h := range holders {
		tr.holders[s.nodes[h].host.ID()] = true
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evCtx, stopEvents := context.WithCancel(ctx)
	evCtx, events := routing.RegisterForQueryEvents(evCtx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			tr.observe(ev)
		}
	}()
	start := time.Now()
	val, err := nd.Get(evCtx, rec.key)
	d := time.Since(start)
	stopEvents()
	<-done
	return opResult{
		d:       d,
		ok:      err == nil && string(val) == string(rec.value),
		err:     err,
		hops:    tr.hops,
		queried: tr.queried,
		holders: len(holders),
	}
}

// hopTracer turns a lookup's query events into a hop count. A peer from the
// getter's own routing table (the lookup's seeds: the K nearest to the key)
// is one hop away; a peer first heard of in the answer of a peer h hops away
// is h+1 hops away. The get's hop count is the hop distance of the first
// peer that answered and holds the record.
type hopTracer struct {
	seeds, holders map[peer.ID]bool
	depth          map[peer.ID]int // queried peers
	heard          map[peer.ID]int // peers named in answers, by first mention
	hops, queried  int
}

func (t *hopTracer) observe(ev *routing.QueryEvent) {
	switch ev.Type {
	case routing.SendingQuery:
		t.queried++
		if _, ok := t.depth[ev.ID]; ok {
			return
		}
		switch {
		case t.seeds[ev.ID]:
			t.depth[ev.ID] = 1
		case t.heard[ev.ID] > 0:
			t.depth[ev.ID] = t.heard[ev.ID]
		default:
			t.depth[ev.ID] = 1 // in the table but not among the seeds; does not happen
		}
	case routing.PeerResponse:
		d := t.depth[ev.ID]
		for _, ai := range ev.Responses {
			if ai != nil && t.heard[ai.ID] == 0 {
				t.heard[ai.ID] = d + 1
			}
		}
		if t.hops == 0 && t.holders[ev.ID] {
			t.hops = d
		}
	}
}

// percentile is the nearest-rank percentile p (0-100) of xs.
func percentile[T int | time.Duration](xs []T, p float64) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type opSummary struct {
	n, ok             int
	p50, p99, maxD    time.Duration
	hops50, hops99    int
	hopsMax           int
	queried, replicas float64
	holders           float64
	firstErr          error
}

func summarize(rs []opResult) opSummary {
	var s opSummary
	var okD []time.Duration
	var hops []int
	for _, r := range rs {
		s.n++
		s.queried += float64(r.queried)
		s.replicas += float64(r.replicas)
		s.holders += float64(r.holders)
		if !r.ok {
			if s.firstErr == nil {
				s.firstErr = r.err
				if s.firstErr == nil {
					s.firstErr = fmt.Errorf("wrong value")
				}
			}
			continue
		}
		s.ok++
		okD = append(okD, r.d)
		hops = append(hops, r.hops)
	}
	if s.n > 0 {
		s.queried /= float64(s.n)
		s.replicas /= float64(s.n)
		s.holders /= float64(s.n)
	}
	s.p50, s.p99, s.maxD = percentile(okD, 50), percentile(okD, 99), percentile(okD, 100)
	s.hops50, s.hops99, s.hopsMax = percentile(hops, 50), percentile(hops, 99), percentile(hops, 100)
	return s
}

func (s opSummary) successPct() float64 {
	if s.n == 0 {
		return 0
	}
	return 100 * float64(s.ok) / float64(s.n)
}

func reportPuts(b *testing.B, rs []opResult) {
	s := summarize(rs)
	b.ReportMetric(ms(s.p50), "put-p50-ms")
	b.ReportMetric(ms(s.p99), "put-p99-ms")
	b.ReportMetric(s.successPct(), "put-success-%")
	b.ReportMetric(s.replicas, "put-replicas-mean")
	if s.firstErr != nil {
		b.Logf("%d of %d puts failed, first: %v", s.n-s.ok, s.n, s.firstErr)
	}
}

func reportGets(b *testing.B, rs []opResult) {
	s := summarize(rs)
	b.ReportMetric(ms(s.p50), "get-p50-ms")
	b.ReportMetric(ms(s.p99), "get-p99-ms")
	b.ReportMetric(s.successPct(), "get-success-%")
	b.ReportMetric(float64(s.hops50), "get-hops-p50")
	b.ReportMetric(float64(s.hops99), "get-hops-p99")
	b.ReportMetric(s.queried, "get-queried-mean")
	if s.firstErr != nil {
		b.Logf("%d of %d gets failed, first: %v", s.n-s.ok, s.n, s.firstErr)
	}
}

func simTable(rpcs, puts []opResult, gets map[int][]opResult) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-14s %5s %8s %8s %8s %8s %10s %10s\n", "op", "n", "ok %", "p50 ms", "p99 ms", "max ms", "hops p50/p99/max", "queried")
	r := summarize(rpcs)
	fmt.Fprintf(&sb, "%-14s %5d %8.1f %8.1f %8.1f %8.1f %10s %10s\n",
		"one request", r.n, r.successPct(), ms(r.p50), ms(r.p99), ms(r.maxD), "-", "-")
	p := summarize(puts)
	fmt.Fprintf(&sb, "%-14s %5d %8.1f %8.1f %8.1f %8.1f %10s %10s  (replicas confirmed: mean %.1f)\n",
		"put (verified)", p.n, p.successPct(), ms(p.p50), ms(p.p99), ms(p.maxD), "-", "-", p.replicas)
	for _, q := range simQuorums {
		g := summarize(gets[q])
		fmt.Fprintf(&sb, "%-14s %5d %8.1f %8.1f %8.1f %8.1f %10s %10.1f  (holders: mean %.1f)\n",
			fmt.Sprintf("get quorum %d", q), g.n, g.successPct(), ms(g.p50), ms(g.p99), ms(g.maxD),
			fmt.Sprintf("%d/%d/%d", g.hops50, g.hops99, g.hopsMax), g.queried, g.holders)
	}
	return sb.String()
}
