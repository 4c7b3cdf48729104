package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

var (
	faultsDelay     = flag.Duration("faults.delay", 50*time.Millisecond, "delay added to each frame at each port of the public segment (a round trip between two public hosts gets twice)")
	faultsJitter    = flag.Duration("faults.jitter", 10*time.Millisecond, "the delay varies uniformly within ± this")
	faultsLoss      = flag.Float64("faults.loss", 0.01, "share of frames lost at each port of the public segment (0.01: 1 %)")
	faultsUserspace = flag.Bool("faults.userspace", false, "impair with nattest's user-space emulator even where the kernel has netem")
	faultsRequests  = flag.Int("faults.requests", 2000, "GETs through the gateway per run")
	faultsConns     = flag.Int("faults.conns", 8, "concurrent clients, one keep-alive connection each")
	faultsFlaps     = flag.Int("faults.flaps", 3, "flaps of alice's uplink per run")
	faultsFlap      = flag.Duration("faults.flap", 2*time.Second, "how long alice's uplink stays down in a flap")
	faultsLimit     = flag.Duration("faults.limit", 2*time.Minute, "longest wait for alice after a flap or after B dies")
)

// BenchmarkFaults (issue 21): the scenario of TestGatewayNAT over plain
// HTTP, the product's supernode and node processes from their configs,
// run clean and then with the public segment impaired (-faults.delay,
// -faults.jitter, -faults.loss; netem or nattest's emulator, see
// nattest.Topology.Impair). Each run is three phases, each on a fresh
// topology where alice is attached to B, and the impairment starts
// once everything is attached and alice answers through the gateway, so
// that the relay's and the DHT's connections live under it:
//
//   - gateway: the latency of -faults.requests GETs of /hello (an
//     80-byte answer) from the user's client through gateway A -> relay
//     B -> alice's node behind home1's NAT, from -faults.conns keep-alive
//     clients; errors (no answer within 30 s, not 200, a wrong body) are
//     counted. Then reattach: alice's uplink down for -faults.flap and up
//     again, the time from link up until a GET through the gateway
//     succeeds, -faults.flaps times (she may come back on A's relay).
//   - failover: supernode B's process killed, then the time until a GET
//     succeeds again, which has to go through A's own relay. The kernel
//     closes a killed process's connections (FIN, RST), so alice and A
//     learn at once;
//   - failover-silent: the same when B's machine vanishes: its link cut,
//     then its process killed, so that nothing tells alice or A.
//
// `make bench-faults`, or:
//
//	go test -run '^$' -bench Faults -benchtime 1x -timeout 30m -v ./e2e/
func BenchmarkFaults(b *testing.B) {
	im := nattest.Impairment{Delay: *faultsDelay, Jitter: *faultsJitter, Loss: *faultsLoss, Userspace: *faultsUserspace}
	var clean, impaired *faultFigures
	for _, run := range []struct {
		name string
		im   *nattest.Impairment
		f    **faultFigures
	}{{"clean", nil, &clean}, {"impaired", &im, &impaired}} {
		b.Run(run.name, func(b *testing.B) {
			f := &faultFigures{}
			*run.f = f
			b.Run("gateway", func(b *testing.B) { measureGateway(b, newFaultScenario(b, run.im), f) })
			b.Run("failover", func(b *testing.B) { measureFailover(b, newFaultScenario(b, run.im), f, false) })
			b.Run("failover-silent", func(b *testing.B) { measureFailover(b, newFaultScenario(b, run.im), f, true) })
		})
	}
	b.Logf("%d GETs from %d clients, %d flaps of %v, gateway A -> relay B -> alice behind NAT:\n%s",
		*faultsRequests, *faultsConns, *faultsFlaps, *faultsFlap, faultsTable(im, clean, impaired))
}

// faultFigures is what one run measured.
type faultFigures struct {
	path          string // the impairment's (empty when clean)
	answered      int
	errors        []string
	p50, p99, max time.Duration
	took          time.Duration // for all the GETs
	reattach      []time.Duration
	failover      [2]time.Duration // B killed; B vanished
	failoverRoute [2]string
}

// faultScenario is the topology of one phase, alice attached to B and
// answering through gateway A.
type faultScenario struct {
	tp           *nattest.Topology
	procB        *nattest.Proc
	aPeer, bPeer string
	name, base   string
	gw           string       // gateway A's address
	user         *http.Client // the user's browser, every name resolving to A
	path         string       // the impairment's (Impaired.Path), or empty
}

// newFaultScenario sets the scenario up, then impairs the public segment
// with im unless it is nil (restored when b ends).
func newFaultScenario(b *testing.B, im *nattest.Impairment) *faultScenario {
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.Logf("load average at the start: %s", strings.TrimSpace(string(load)))
	}
	tp := nattest.New(b)
	dir := b.TempDir()
	opFile, opID, _ := keyFile(b, dir, "operator.key")
	aKey, _, aPeer := keyFile(b, dir, "a.key")
	bKey, _, bPeer := keyFile(b, dir, "b.key")
	nodeKey, nodeID, _ := keyFile(b, dir, "alice.key")
	aAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), aPeer)
	bAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeB.Addr(), bPeer)
	domains := []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}}
	snConfig := func(key, peerAddr, name string) *supernode.Config {
		return &supernode.Config{KeyFile: key, DataDir: filepath.Join(dir, name), Listen: []string{"/ip4/0.0.0.0/tcp/8090"},
			Bootstrap: []string{peerAddr}, Domains: domains, AllowPrivateDials: true, // the scenario's networks are private
			// Every GET comes from the one client address: no per-IP limit.
			Gateway: &supernode.GatewayConfig{HTTPListen: ":80", RateLimit: 1e6, Burst: 1e6}}
	}
	cfgA := snConfig(aKey, bAddr, "a")
	cfgA.Gateway.OperatorKeys = map[string]string{testDomain: opFile}
	start(b, tp.SupernodeA, "supernode", "supernode-a", cfgA)
	procB := start(b, tp.SupernodeB, "supernode", "supernode-b", snConfig(bKey, aAddr, "b"))
	start(b, tp.Node1, "node", "alice", &personal.Config{KeyFile: nodeKey, Supernodes: []string{bAddr, aAddr}, MaxAttached: 1,
		PinSupernodes: true, P2PListen: []string{"/ip4/0.0.0.0/tcp/8090"}})

	s := &faultScenario{tp: tp, procB: procB, aPeer: aPeer, bPeer: bPeer, name: "alice." + testDomain,
		gw: tp.SupernodeA.Addr().String()}
	s.base = "http://" + s.name
	s.user = userClient(tp.Client, s.gw, nil)
	key, err := identity.LoadKeyFile(nodeKey)
	if err != nil {
		b.Fatal(err)
	}
	api := &namesapi.Client{API: "http://" + s.gw, HTTP: s.user}
	if ni, err := api.Claim(context.Background(), key, s.name, ""); err != nil || ni.DID != nodeID.DID() {
		b.Fatalf("claim: %+v %v", ni, err)
	}
	waitOK(b, s.user, s.base+"/hello", 30*time.Second)
	if st := routing(b, s.user, s.base); !strings.HasPrefix(st.LastRoute, "via "+bPeer) {
		b.Fatalf("alice reached by %q, want via B (%s); A is %s", st.LastRoute, bPeer, aPeer)
	}
	if im == nil {
		return s
	}
	d, err := tp.Impair(*im)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("impaired: %v, path %s (%s)", *im, d.Path(), d.Reason())
	s.path = d.Path()
	b.Cleanup(func() {
		b.Logf("emulator: %+v", d.Stats())
		if err := d.Restore(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// route says how gateway A reached alice last, naming A and B.
func (s *faultScenario) route(b *testing.B) string {
	r := routing(b, s.user, s.base).LastRoute
	r = strings.Replace(r, s.bPeer, "B", 1)
	return strings.Replace(r, s.aPeer, "A", 1)
}

// measureGateway measures the gateway's latency, then reattach after
// flaps of alice's uplink.
func measureGateway(b *testing.B, s *faultScenario, f *faultFigures) {
	f.path = s.path
	hello := s.base + "/hello"
	check := func(code int, body string) error {
		if code != 200 || !strings.HasPrefix(body, "hello "+s.name) {
			return fmt.Errorf("%d %.80q", code, body)
		}
		return nil
	}
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range *faultsConns {
		c := userClient(s.tp.Client, s.gw, nil) // a connection of its own
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for i := w; i < *faultsRequests; i += *faultsConns {
				start := time.Now()
				err := get(c, hello, 30*time.Second, check)
				took := time.Since(start)
				mu.Lock()
				if err != nil {
					f.errors = append(f.errors, fmt.Sprintf("after %v: %v", took.Round(time.Millisecond), err))
				} else {
					lat = append(lat, took)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	f.took = time.Since(begin)
	f.answered = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
		f.p50, f.p99, f.max = q(0.5), q(0.99), lat[len(lat)-1]
	}
	b.Logf("%d GETs in %v: %d answered, p50 %v p99 %v max %v; %d errors; last route %q", *faultsRequests,
		f.took.Round(time.Millisecond), f.answered, f.p50, f.p99, f.max, len(f.errors), s.route(b))
	for i, e := range f.errors {
		if i == 10 {
			b.Logf("  ... %d more", len(f.errors)-i)
			break
		}
		b.Logf("  error: %s", e)
	}

	for i := range *faultsFlaps {
		if err := s.tp.Node1.SetLink(false); err != nil {
			b.Fatal(err)
		}
		time.Sleep(*faultsFlap)
		if err := s.tp.Node1.SetLink(true); err != nil {
			b.Fatal(err)
		}
		took := waitOK(b, s.user, hello, *faultsLimit)
		f.reattach = append(f.reattach, took)
		b.Logf("flap %d: alice answers %v after her link is back, reached by %q", i+1, took.Round(time.Millisecond), s.route(b))
		time.Sleep(2 * time.Second) // settled before the next flap
	}
	b.ReportMetric(0, "ns/op") // the run's length says nothing
	b.ReportMetric(ms(f.p50), "p50-ms")
	b.ReportMetric(ms(f.p99), "p99-ms")
	b.ReportMetric(float64(len(f.errors)), "errors")
	b.ReportMetric(ms(medianOf(f.reattach)), "reattach-ms")
}

// measureFailover kills B (silent: cuts its link first) and measures
// how long alice is away.
func measureFailover(b *testing.B, s *faultScenario, f *faultFigures, silent bool) {
	i := 0
	if silent {
		i = 1
		if err := s.tp.SupernodeB.SetLink(false); err != nil {
			b.Fatal(err)
		}
	}
	s.procB.Kill()
	f.failover[i] = waitOK(b, s.user, s.base+"/hello", *faultsLimit)
	f.failoverRoute[i] = s.route(b)
	b.Logf("B killed (link cut first: %v): alice answers through A %v later, reached by %q", silent,
		f.failover[i].Round(time.Millisecond), f.failoverRoute[i])
	if f.failoverRoute[i] != "relay" {
		b.Errorf("after B died alice is reached by %q, want A's relay", f.failoverRoute[i])
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(f.failover[i]), "failover-ms")
}

// get does one GET within limit and hands its status and body to check.
func get(c *http.Client, url string, limit time.Duration, check func(int, string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	return check(resp.StatusCode, string(body))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2]
}

// faultsTable puts the runs side by side, in Markdown.
func faultsTable(im nattest.Impairment, clean, impaired *faultFigures) string {
	col := func(f *faultFigures, cell func(*faultFigures) string) string {
		if f == nil {
			return "not run"
		}
		return cell(f)
	}
	var s strings.Builder
	head := "impaired"
	if impaired != nil {
		head = fmt.Sprintf("impaired (%v; %s)", im, impaired.path)
	}
	fmt.Fprintf(&s, "| | clean | %s |\n|---|---|---|\n", head)
	row := func(what string, cell func(*faultFigures) string) {
		fmt.Fprintf(&s, "| %s | %s | %s |\n", what, col(clean, cell), col(impaired, cell))
	}
	gwRow := func(what string, cell func(*faultFigures) string) {
		row(what, func(f *faultFigures) string {
			if f.took == 0 {
				return "not run"
			}
			return cell(f)
		})
	}
	round := func(d time.Duration) string {
		if d >= 10*time.Millisecond {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(10 * time.Microsecond).String()
	}
	gwRow("gateway GET p50", func(f *faultFigures) string { return round(f.p50) })
	gwRow("gateway GET p99", func(f *faultFigures) string { return round(f.p99) })
	gwRow("gateway GET max", func(f *faultFigures) string { return round(f.max) })
	gwRow("errors", func(f *faultFigures) string {
		return fmt.Sprintf("%d of %d", len(f.errors), f.answered+len(f.errors))
	})
	gwRow("all GETs took", func(f *faultFigures) string { return round(f.took) })
	gwRow("reattach after a flap (each)", func(f *faultFigures) string {
		var each []string
		for _, d := range f.reattach {
			each = append(each, round(d))
		}
		return strings.Join(each, ", ")
	})
	gwRow("reattach, median", func(f *faultFigures) string { return round(medianOf(f.reattach)) })
	for i, what := range []string{"failover: B's process killed", "failover: B's machine vanishes (link cut, then killed)"} {
		row(what+", until alice answers through A's relay", func(f *faultFigures) string {
			if f.failoverRoute[i] == "" {
				return "not run"
			}
			return fmt.Sprintf("%s (route %q)", round(f.failover[i]), f.failoverRoute[i])
		})
	}
	return s.String()
}
