package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/relay/relayserver"
)

const testDomain = "pc2.test"

// world is a small PC2 network on loopback: supernodes with relays, an
// operator key pinned for testDomain, and personal nodes.
type world struct {
	t *testing.T
	// publicDials makes the supernodes added from now on dial public
	// addresses only (dht.Config.PublicDialsOnly, a supernode's default).
	publicDials bool
	operator    ed25519.PrivateKey
	opID        identity.ID
	trust       records.TrustMap
	sns         []*supernode
}

type supernode struct {
	key    ed25519.PrivateKey
	node   *dht.Node
	relay  *relayserver.Relay
	cancel context.CancelFunc
}

func newWorld(t *testing.T, supernodes int) *world {
	t.Helper()
	_, op, _ := ed25519.GenerateKey(nil)
	opID, _ := identity.IDFromPublicKey(op.Public().(ed25519.PublicKey))
	w := &world{t: t, operator: op, opID: opID, trust: records.TrustMap{testDomain: opID}}
	for range supernodes {
		w.addSupernode()
	}
	return w
}

func (w *world) addSupernode() *supernode {
	t := w.t
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	var boot []peer.AddrInfo
	for _, s := range w.sns {
		boot = append(boot, s.node.AddrInfo())
	}
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeServer, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: boot, Trust: w.trust, PublicDialsOnly: w.publicDials, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	gws, err := dht.NewGatewaySet(dht.GatewaysConfig{Resolve: n.ResolveDomain, Domains: func() []string { return []string{testDomain} },
		MinRefresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relayserver.New(relayserver.Config{Host: n.Host(), KeepAlive: 500 * time.Millisecond, ListenIP: "127.0.0.1",
		PortMin: 30000, PortMax: 60000, Forwarders: gws.Allowed, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(boot) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := &supernode{key: key, node: n, relay: r}
	var once sync.Once
	s.cancel = func() { once.Do(func() { r.Close(); n.Close() }) }
	t.Cleanup(s.cancel)
	w.sns = append(w.sns, s)
	return s
}

// gateway runs a gateway on supernode s, listed in the domain's record
// (as a supernode holding the operator key lists itself), so relays and
// direct nodes take its streams.
func (w *world) gateway(s *supernode, edit func(*Config)) (*Gateway, *httptest.Server) {
	t := w.t
	t.Helper()
	lctx, lcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer lcancel()
	if _, err := s.node.ListGateway(lctx, testDomain, "", w.operator); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Host: s.node.Host(), Resolver: s.node, Relay: s.relay, Domains: []string{testDomain},
		API:    http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { fmt.Fprint(rw, "names API") }),
		Logger: testlog.New(t, 0)}
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(g)
	srv.Config = g.Server()
	srv.Start()
	t.Cleanup(srv.Close)
	return g, srv
}

// grant publishes the operator's grant of name to id.
func (w *world) grant(name string, key ed25519.PrivateKey) {
	t := w.t
	t.Helper()
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	now := time.Now()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	sc, err := records.SignClaim(key, &records.Claim{Version: records.Version, Name: name, DID: id, Action: records.ActionHold,
		IssuedAt: now.Unix(), Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	val, err := records.SignGrant(w.operator, &records.Grant{Version: records.Version, Name: name, DID: id, Seq: 1,
		Status: records.StatusActive, IssuedAt: now.Unix(), Expires: now.Add(24 * time.Hour).Unix(), Operator: w.opID}, &sc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := w.sns[0].node.PutVerified(ctx, records.NameKey(name), val); err != nil {
		t.Fatal(err)
	}
}

// node runs a personal node attached to sns (mode as personal.Config.Mode)
// serving the test handlers; stop ends it.
type node struct {
	key  ed25519.PrivateKey
	id   identity.ID
	n    *personal.Node
	stop func()
}

func (w *world) node(mode string, sns ...*supernode) *node {
	w.t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	return w.nodeWithKey(key, mode, sns...)
}

func (w *world) nodeWithKey(key ed25519.PrivateKey, mode string, sns ...*supernode) *node {
	t := w.t
	t.Helper()
	dir := t.TempDir()
	kf := filepath.Join(dir, "node.key")
	if err := identity.WriteKeyFile(kf, key); err != nil {
		t.Fatal(err)
	}
	cfg := &personal.Config{KeyFile: kf, Mode: mode, P2PListen: []string{"/ip4/127.0.0.1/tcp/0"},
		NameServices: []cloud.NameService{{Domain: testDomain, Operator: w.opID.DID()}}}
	for _, s := range sns {
		for _, a := range s.node.Multiaddrs() {
			cfg.Supernodes = append(cfg.Supernodes, a.String())
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *personal.Node, 1)
	done := make(chan error, 1)
	go func() {
		done <- personal.Run(ctx, cfg, personal.Options{Listener: ln, Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
			Routes: echotest.Register, Started: func(n *personal.Node) { started <- n }})
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	select {
	case n := <-started:
		return &node{key: key, id: id, n: n, stop: stop}
	case err := <-done:
		t.Fatalf("node: %v", err)
	}
	return nil
}

// waitRecord waits until the node's did record, as sn resolves it, has
// what ok wants.
func (w *world) waitRecord(sn *supernode, id identity.ID, ok func(*records.DID) bool) {
	t := w.t
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := sn.node.ResolveDID(ctx, id)
		cancel()
		if err == nil && ok(d) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("did record of %s: %+v %v", id.DID(), d, err)
		}
	}
}

func listsSupernode(s *supernode) func(*records.DID) bool {
	return func(d *records.DID) bool {
		for _, p := range d.Supernodes {
			if pid, _ := dht.IDToPeer(p.ID); pid == s.node.Host().ID() {
				return true
			}
		}
		return false
	}
}

// get fetches http://<host><path> from the gateway at srv.
func get(t *testing.T, srv *httptest.Server, host, path string) (int, string) {
	t.Helper()
	return request(t, srv, "GET", host, path, nil)
}

// request sends a request for http://<host><path> to the gateway at srv.
func request(t *testing.T, srv *httptest.Server, method, host, path string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	req.Host = host
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func status(t *testing.T, srv *httptest.Server, name string) Status {
	t.Helper()
	code, body := get(t, srv, name, "/?status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("?status: %d %s", code, body)
	}
	return st
}

// TestGatewayRoutes: alice is attached to supernode B only; gateway A
// reaches her through B (forwarding), with GET, a streamed POST and a
// WebSocket; once she is attached to A too, A uses its own relay; a node
// the relay finds direct is reached directly; unknown names, bad hosts and
// the apex get their answers.
func TestGatewayRoutes(t *testing.T) {
	w := newWorld(t, 2)
	a, b := w.sns[0], w.sns[1]
	_, srv := w.gateway(a, nil)
	alice := w.node(personal.ModeRelayed, b)
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(a, alice.id, listsSupernode(b))

	code, body := get(t, srv, "alice."+testDomain, "/hello")
	if code != 200 || !strings.HasPrefix(body, "hello alice."+testDomain+" xff=127.0.0.1 xfh=alice."+testDomain+" xfp=http") {
		t.Fatalf("GET through the gateway: %d %q", code, body)
	}
	if st := status(t, srv, "alice."+testDomain); !strings.HasPrefix(st.LastRoute, "via "+b.node.Host().ID().String()) ||
		st.DID != alice.id.DID() || st.Attached {
		t.Fatalf("status after a forwarded request: %+v", st)
	}

	// A 64 MB POST streamed through A -> B -> alice, checked end to end.
	const size = 64 << 20
	h := sha256.New()
	req, _ := http.NewRequest("POST", srv.URL+"/sum", io.TeeReader(io.LimitReader(rand.Reader, size), h))
	req.Host = "alice." + testDomain
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x", size, h.Sum(nil)); string(got) != want {
		t.Fatalf("POST: %s %q, want %q", resp.Status, got, want)
	}

	// WebSocket.
	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("tcp", srv.Listener.Addr().String()) }}
	ws, _, err := d.Dial("ws://alice."+testDomain+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("hi alice"))
	if _, m, err := ws.ReadMessage(); err != nil || string(m) != "hi alice" {
		t.Fatalf("websocket echo %q %v", m, err)
	}
	ws.Close()

	// Bob attaches to A: A's own relay.
	bob := w.node(personal.ModeRelayed, a)
	w.grant("bob."+testDomain, bob.key)
	w.waitRecord(a, bob.id, listsSupernode(a))
	if code, body := get(t, srv, "bob."+testDomain, "/hello"); code != 200 {
		t.Fatalf("bob: %d %q", code, body)
	}
	if st := status(t, srv, "bob."+testDomain); st.LastRoute != "relay" || !st.Attached {
		t.Fatalf("bob's status: %+v", st)
	}

	// Carol listens, and B's dial-back finds her direct.
	carol := w.node("", b)
	w.grant("carol."+testDomain, carol.key)
	w.waitRecord(a, carol.id, func(d *records.DID) bool { return len(d.Direct) > 0 })
	if code, body := get(t, srv, "carol."+testDomain, "/hello"); code != 200 {
		t.Fatalf("carol: %d %q", code, body)
	}
	if st := status(t, srv, "carol."+testDomain); st.LastRoute != "direct" {
		t.Fatalf("carol's status: %+v", st)
	}

	for _, c := range []struct {
		host string
		code int
		want string
	}{
		{"nobody." + testDomain, 404, "not registered"},
		{"x." + testDomain, 404, "not a name anyone can hold"},
		{"a.b." + testDomain, 404, "not a domain this gateway serves"},
		{"alice.example.org", 404, "not a domain this gateway serves"},
		{"bad_host." + testDomain, 400, "not a valid host name"},
		{"alice..pc2.test", 400, "not a valid host name"},
		{testDomain, 200, "names API"},
		{"ALICE.PC2.TEST.:80", 200, "hello alice.pc2.test"},
	} {
		code, body := get(t, srv, c.host, "/hello")
		if code != c.code || !strings.Contains(strings.ToLower(body), strings.ToLower(c.want)) {
			t.Errorf("Host %q: %d %q, want %d with %q", c.host, code, body, c.code, c.want)
		}
	}
	if st := status(t, srv, "nobody."+testDomain); st.Registered || st.Error == "" {
		t.Errorf("status of an unknown name: %+v", st)
	}
}

// TestGatewayOfflineAndMove: an offline node gets a 502 page within the
// dial timeout; a node whose supernode dies moves to another one, and the
// gateway follows its new record.
func TestGatewayOfflineAndMove(t *testing.T) {
	w := newWorld(t, 3)
	a, b, c := w.sns[0], w.sns[1], w.sns[2]
	_, srv := w.gateway(a, func(cfg *Config) { cfg.CacheTTL = time.Hour })
	alice := w.node(personal.ModeRelayed, b, c)
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(a, alice.id, func(d *records.DID) bool { return len(d.Supernodes) == 2 })
	if code, body := get(t, srv, "alice."+testDomain, "/hello"); code != 200 {
		t.Fatalf("alice: %d %q", code, body)
	}

	// B dies: the cached record still lists it first, and C works.
	b.cancel()
	start := time.Now()
	code, body := get(t, srv, "alice."+testDomain, "/hello")
	t.Logf("first request after B died: %d in %v", code, time.Since(start).Round(time.Millisecond))
	if code != 200 {
		t.Fatalf("after B died: %d %q", code, body)
	}

	// Alice goes offline: a clear 502, quickly.
	alice.stop()
	start = time.Now()
	code, body = get(t, srv, "alice."+testDomain, "/hello")
	took := time.Since(start)
	t.Logf("offline node answered %d in %v (target 2 s)", code, took.Round(time.Millisecond))
	if code != 502 || !strings.Contains(body, "is offline") {
		t.Fatalf("offline node: %d %q", code, body)
	}
	if took > 10*time.Second {
		t.Fatalf("offline node took %v", took)
	}
	// ?status says why in general terms only: the dial errors themselves
	// (addresses, ports, refusals, peer IDs) would map the supernode's
	// network for anyone who publishes a did record.
	if st := status(t, srv, "alice."+testDomain); !strings.HasPrefix(st.LastError, "offline: ") ||
		strings.ContainsAny(st.LastError, "0123456789/") || strings.Contains(st.LastError, "dial") {
		t.Errorf("status's last error: got %q, want a generic offline reason", st.LastError)
	}
}

// TestGatewayMoveFollowed: alice attached to B alone moves to C when B
// dies; the gateway's cached record names only B, and the next request
// re-resolves and reaches her through C.
func TestGatewayMoveFollowed(t *testing.T) {
	w := newWorld(t, 3)
	a, b, c := w.sns[0], w.sns[1], w.sns[2]
	_, srv := w.gateway(a, func(cfg *Config) { cfg.CacheTTL = time.Hour })
	alice := w.node(personal.ModeRelayed, b)
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(a, alice.id, listsSupernode(b))
	if code, body := get(t, srv, "alice."+testDomain, "/hello"); code != 200 {
		t.Fatalf("alice: %d %q", code, body)
	}
	// She moves: a second node process with her key attached to C (her
	// device's new supernode), and B goes away.
	b.cancel()
	alice.stop()
	moved := w.nodeWithKey(alice.key, personal.ModeRelayed, c)
	w.waitRecord(a, moved.id, listsSupernode(c))
	start := time.Now()
	code, body := get(t, srv, "alice."+testDomain, "/hello")
	t.Logf("after the move: %d in %v", code, time.Since(start).Round(time.Millisecond))
	if code != 200 {
		t.Fatalf("after the move: %d %q", code, body)
	}
	if st := status(t, srv, "alice."+testDomain); !strings.HasPrefix(st.LastRoute, "via "+c.node.Host().ID().String()) {
		t.Fatalf("route after the move: %+v", st)
	}
}

// TestGatewayRateLimit: a client over its rate gets 429; another client
// is not affected.
func TestGatewayRateLimit(t *testing.T) {
	w := newWorld(t, 1)
	now := time.Unix(1_800_000_000, 0)
	g, _ := w.gateway(w.sns[0], func(cfg *Config) {
		cfg.Rate, cfg.Burst = 1, 5
		cfg.Now = func() time.Time { return now }
	})
	do := func(ip string) int {
		r := httptest.NewRequest("GET", "http://"+testDomain+"/", nil)
		r.RemoteAddr = ip + ":1234"
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, r)
		return rec.Code
	}
	for i := range 5 {
		if code := do("192.0.2.1"); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	if code := do("192.0.2.1"); code != http.StatusTooManyRequests {
		t.Fatalf("6th request: %d, want 429", code)
	}
	if code := do("192.0.2.2"); code != 200 {
		t.Fatalf("other client: %d", code)
	}
	now = now.Add(2 * time.Second)
	if code := do("192.0.2.1"); code != 200 {
		t.Fatalf("after refill: %d", code)
	}
}

// TestGatewayStreamShares (issue 16, finding 3): a stranger holding
// WebSockets to a node from one address gets its share of the node's
// streams (StreamsPerClient) and a 503 beyond it (once its wait in line
// ends), while a visitor from another address still gets pages; with
// the default limits and no share, 300 held streams left every visitor a
// 503. The IPv6 addresses of one /64 are one client.
func TestGatewayStreamShares(t *testing.T) {
	w := newWorld(t, 1)
	// The request rate limit (200 at once, then 50/s) only slows the
	// stranger down by seconds, and so would the wait in line of each
	// WebSocket over its share: lifted here so the test does not wait.
	_, srv := w.gateway(w.sns[0], func(cfg *Config) { cfg.Burst, cfg.QueueWait = 1000, 10*time.Millisecond })
	alice := w.node(personal.ModeRelayed, w.sns[0])
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(w.sns[0], alice.id, listsSupernode(w.sns[0]))
	if code, body := get(t, srv, "alice."+testDomain, "/hello"); code != 200 {
		t.Fatalf("before the attack: %d %q", code, body)
	}
	stranger := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		return d.Dial("tcp", srv.Listener.Addr().String())
	}}
	held, busy := 0, 0
	for range 300 {
		ws, resp, err := stranger.Dial("ws://alice."+testDomain+"/ws", nil)
		switch {
		case err == nil:
			defer ws.Close()
			held++
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			busy++
		case resp != nil:
			t.Fatalf("stranger's WebSocket: %v (%s)", err, resp.Status)
		default:
			t.Fatalf("stranger's WebSocket: %v", err)
		}
	}
	if held != DefaultStreamsPerClient || busy != 300-DefaultStreamsPerClient {
		t.Fatalf("stranger held %d streams and got %d 503s, want %d and %d", held, busy, DefaultStreamsPerClient, 300-DefaultStreamsPerClient)
	}
	for i := range 20 {
		if code, body := get(t, srv, "alice."+testDomain, "/hello"); code != 200 {
			t.Fatalf("visitor %d while the stranger holds its share: %d %q", i, code, body)
		}
	}
}

// TestGatewayQueues (issue 21): requests beyond a client's share of a
// node's streams, and beyond the node's, wait in line and are all
// answered, none with an error; a request that waits longer than
// QueueWait gets a 503 with Retry-After.
func TestGatewayQueues(t *testing.T) {
	w := newWorld(t, 1)
	_, srv := w.gateway(w.sns[0], func(cfg *Config) {
		cfg.Burst, cfg.StreamsPerClient, cfg.StreamsPerNode = 10000, 32, 4
	})
	alice := w.node(personal.ModeRelayed, w.sns[0])
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(w.sns[0], alice.id, listsSupernode(w.sns[0]))
	var wg sync.WaitGroup
	codes := make(chan int, 300)
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", srv.URL+"/hello", nil)
			req.Host = "alice." + testDomain
			resp, err := srv.Client().Do(req)
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Fatalf("a request in line got %d, want 200 for all", code)
		}
	}

	// Lines that do not move: every slot held by WebSockets.
	_, srv2 := w.gateway(w.sns[0], func(cfg *Config) {
		cfg.Burst, cfg.StreamsPerClient, cfg.QueueWait = 10000, 2, 200*time.Millisecond
	})
	for range 2 {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+srv2.Listener.Addr().String()+"/ws", http.Header{"Host": {"alice." + testDomain}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
	}
	req, _ := http.NewRequest("GET", srv2.URL+"/hello", nil)
	req.Host = "alice." + testDomain
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("over the share with no slot freed: %d Retry-After %q after %v, want 503 with Retry-After after the wait",
			resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start))
	}
}

// TestGatewayLineLetsGo (issue 21): requests and TLS connections whose
// clients closed their connections leave the line at once, so that the
// same client's next ones find room in it. Over HTTPS, a connection for a
// name whose node may take TLS itself waits in line before its ClientHello
// goes to the node (Gateway.splice); it used to hold its place until
// QueueWait however early its client left, and a benchmark run right
// after a warm-up at 1,000 connections got a full line's 503s for all of
// its 10 s.
func TestGatewayLineLetsGo(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", overTLS), func(t *testing.T) { testLineLetsGo(t, overTLS) })
	}
}

func testLineLetsGo(t *testing.T, overTLS bool) {
	w := newWorld(t, 1)
	const share = 2
	g, srv := w.gateway(w.sns[0], func(cfg *Config) {
		cfg.Burst, cfg.StreamsPerClient, cfg.QueueWait = 10000, share, 20*time.Second
		cfg.Rate = 1e4
	})
	alice := w.node(personal.ModeRelayed, w.sns[0])
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(w.sns[0], alice.id, listsSupernode(w.sns[0]))
	url := srv.URL + "/hello"
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	var tlsConfig *tls.Config
	if overTLS {
		// A certificate of the gateway's for alice's name (her node has
		// none: after the wait in line, the gateway terminates).
		addr, pool := serveTLS(t, g, "alice."+testDomain)
		tlsConfig = &tls.Config{RootCAs: pool}
		url = "https://alice." + testDomain + "/hello"
		dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
	}
	// WebSockets (over plain HTTP, the same client) hold the client's
	// share: the line does not move.
	var held []*websocket.Conn
	for range share {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+srv.Listener.Addr().String()+"/ws", http.Header{"Host": {"alice." + testDomain}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		held = append(held, ws)
	}
	// A full line (16 times the share), each on a connection of its own,
	// given up on by their clients.
	send := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Host = "alice." + testDomain
		tr := &http.Transport{DialContext: dial, TLSClientConfig: tlsConfig}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	early := make(chan int, 16*share)
	for range 16 * share {
		wg.Go(func() {
			if code, err := send(ctx); err == nil {
				early <- code
			}
		})
	}
	time.Sleep(time.Second) // all in line
	if n := len(early); n > 0 {
		t.Fatalf("%d requests answered while the share was held, want all in line (first: %d)", n, <-early)
	}
	cancel()
	wg.Wait()
	// The next request finds room in the line, and is answered once a
	// slot is free; before, it would have been a 503 at once.
	got := make(chan int, 1)
	start := time.Now()
	go func() {
		code, err := send(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- code
	}()
	select {
	case code := <-got:
		t.Fatalf("after the line's clients left, the next request got %d after %v, want a place in line", code, time.Since(start))
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	if code := <-got; code != 200 {
		t.Fatalf("the next request, once a slot was free: %d", code)
	}
}

// TestGatewayNoScanning (issue 16, finding 6): a stranger grants itself a
// name whose did record lists "direct" addresses on the supernode's own
// loopback (a service there, and a closed port). A supernode dialling
// public addresses only (its default) never connects to them, and the
// visitor (the stranger) gets the same generic offline answer for the
// open and the closed port. With private dials allowed (a LAN supernode),
// the gateway did connect to the service: the scan this prevents.
func TestGatewayNoScanning(t *testing.T) {
	for _, public := range []bool{true, false} {
		t.Run(fmt.Sprintf("PublicDialsOnly=%v", public), func(t *testing.T) {
			w := newWorld(t, 0)
			w.publicDials = public
			sn := w.addSupernode()
			_, srv := w.gateway(sn, nil)
			victim, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer victim.Close()
			var accepted atomic.Int32
			go func() {
				for {
					c, err := victim.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()
			closed := proc.FreePort(t)
			errs := map[string]string{}
			for label, port := range map[string]int{"open": victim.Addr().(*net.TCPAddr).Port, "closed": closed} {
				_, key, _ := ed25519.GenerateKey(nil)
				id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
				pid, _ := dht.IDToPeer(id)
				now := time.Now()
				val, err := records.SignDID(key, &records.DID{Version: records.Version, ID: id, Seq: 1, IssuedAt: now.Unix(),
					Expires: now.Add(time.Hour).Unix(), Direct: []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, pid)}})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err = sn.node.PutVerified(ctx, records.DIDKey(id), val)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				name := "scan" + label + "." + testDomain
				w.grant(name, key)
				if code, _ := get(t, srv, name, "/"); code != http.StatusBadGateway {
					t.Fatalf("%s port: got %d, want 502", label, code)
				}
				errs[label] = status(t, srv, name).LastError
			}
			if errs["open"] != errs["closed"] || !strings.HasPrefix(errs["open"], "offline") {
				t.Errorf("?status tells the open port from the closed one: %q vs %q", errs["open"], errs["closed"])
			}
			if got := accepted.Load(); public && got != 0 {
				t.Errorf("the gateway connected to a loopback service %d times", got)
			} else if !public && got == 0 {
				t.Error("with private dials allowed the gateway never reached the service: the test shows nothing")
			}
		})
	}
}

// TestGatewaySlowClients: a client that never finishes its headers, and
// one that idles on a keep-alive connection, are disconnected.
func TestGatewaySlowClients(t *testing.T) {
	w := newWorld(t, 1)
	_, srv := w.gateway(w.sns[0], func(cfg *Config) { cfg.HeaderTimeout, cfg.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond })
	for _, tc := range []struct{ name, send string }{
		{"slow headers", "GET / HTTP/1.1\r\nHost: " + testDomain + "\r\nX-Slow: "},
		{"idle keep-alive", "GET / HTTP/1.1\r\nHost: " + testDomain + "\r\n\r\n"},
	} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tc.send)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		n, err := io.Copy(io.Discard, c) // until the server closes
		c.Close()
		if err != nil {
			t.Fatalf("%s: not disconnected: %v", tc.name, err)
		}
		t.Logf("%s: disconnected after %v (%d bytes answered)", tc.name, time.Since(start).Round(time.Millisecond), n)
	}
}

// TestGatewayLargeUpload: a 1 GB upload streams through gateway, relay
// and node without being held in memory.
func TestGatewayLargeUpload(t *testing.T) {
	if testing.Short() || testenv.Race {
		t.Skip("1 GB upload: not in -short or -race runs")
	}
	w := newWorld(t, 1)
	a := w.sns[0]
	_, srv := w.gateway(a, nil)
	alice := w.node(personal.ModeRelayed, a)
	w.grant("alice."+testDomain, alice.key)
	w.waitRecord(a, alice.id, listsSupernode(a))

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	const size = 1 << 30
	h := sha256.New()
	req, _ := http.NewRequest("POST", srv.URL+"/sum", io.TeeReader(io.LimitReader(rand.Reader, size), h))
	req.Host = "alice." + testDomain
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(stop)
	<-sampled
	if want := fmt.Sprintf("%d %x", size, h.Sum(nil)); string(got) != want {
		t.Fatalf("1 GB POST: %s %q, want %q", resp.Status, got, want)
	}
	growth := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("1 GB POST in %v; heap in use grew by at most %d MB (client, gateway, relay and node in this process)",
		time.Since(start).Round(time.Millisecond), growth>>20)
	if growth > 256<<20 {
		t.Fatalf("heap grew by %d MB during a 1 GB upload: the body is being held", growth>>20)
	}
}

// TestGatewayAllowed: certificates on demand only for the apex and for
// registered names.
func TestGatewayAllowed(t *testing.T) {
	w := newWorld(t, 1)
	g, _ := w.gateway(w.sns[0], nil)
	_, key, _ := ed25519.GenerateKey(nil)
	w.grant("alice."+testDomain, key)
	ctx := context.Background()
	for name, ok := range map[string]bool{
		testDomain: true, "alice." + testDomain: true, "ALICE." + testDomain: true,
		"bob." + testDomain: false, "a.b." + testDomain: false, "other.test": false, "x_y." + testDomain: false, "": false,
	} {
		if err := g.Allowed(ctx, name); (err == nil) != ok {
			t.Errorf("Allowed(%q) = %v, want allowed %v", name, err, ok)
		}
	}
}

// countingResolver finds no name and counts the lookups.
type countingResolver struct{ n atomic.Int32 }

func (c *countingResolver) ResolveName(context.Context, string) (*dht.NameResolution, error) {
	c.n.Add(1)
	return nil, dht.ErrNotFound
}

// addrConn is a connection with a given remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestGatewayHandshakeLookups (issue 16, finding 8): TLS handshakes for
// random names each asked the DHT, outside the per-client limit, and the
// resolution cache grew past its bound within its TTL. Now a client's
// handshakes for names not in the cache count in its request limit, and
// the cache stays bounded.
func TestGatewayHandshakeLookups(t *testing.T) {
	w := newWorld(t, 1)
	res := &countingResolver{}
	g, _ := w.gateway(w.sns[0], func(c *Config) { c.Resolver = res; c.Rate, c.Burst = 1, 5 })
	hello := func(ip string) context.Context {
		conn := addrConn{remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234}}
		return context.WithValue(context.Background(), certmagic.ClientHelloInfoCtxKey, &tls.ClientHelloInfo{Conn: conn})
	}
	for i := range 100 {
		g.Allowed(hello("192.0.2.1"), fmt.Sprintf("random%d.%s", i, testDomain))
	}
	if got := res.n.Load(); got != 5 {
		t.Fatalf("100 handshakes for random names from one client made %d lookups, want its burst of 5", got)
	}
	if err := g.Allowed(hello("192.0.2.2"), "other."+testDomain); err == nil || res.n.Load() != 6 {
		t.Fatalf("another client's handshake: %v after %d lookups, want a lookup (and no such name)", err, res.n.Load())
	}

	old := maxCache
	maxCache = 1000
	defer func() { maxCache = old }()
	for i := range 5000 {
		g.lookup(context.Background(), fmt.Sprintf("fill%d.%s", i, testDomain), false)
	}
	g.mu.Lock()
	size := len(g.cache)
	g.mu.Unlock()
	if size > maxCache {
		t.Fatalf("the cache holds %d names within its TTL, bound %d", size, maxCache)
	}
}
