package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/relayfront"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
	"github.com/pc2/pc2/services/relay/relayserver"
)

// supernode is a relay on a DHT server host with an HTTP front.
type supernode struct {
	node  *dht.Node
	relay *relayserver.Relay
	front *httptest.Server
}

func newSupernode(t *testing.T, limits relay.Limits) *supernode {
	t.Helper()
	return newSupernodeWith(t, func(c *relayserver.Config) { c.Limits = limits })
}

// newSupernodeWith is newSupernode with edit applied to the relay config.
func newSupernodeWith(t *testing.T, edit func(*relayserver.Config)) *supernode {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	rc := relayserver.Config{Host: n.Host(), KeepAlive: 500 * time.Millisecond,
		ListenIP: "127.0.0.1", PortMin: 30000 + int(time.Now().UnixNano()%20000), PortMax: 65000,
		Logger: testlog.New(t, 0)}
	edit(&rc)
	r, err := relayserver.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	sn := &supernode{node: n, relay: r, front: httptest.NewServer(relayfront.Handler(r, rc.Logger))}
	t.Cleanup(sn.stop)
	return sn
}

func (s *supernode) stop() {
	s.front.Close()
	s.relay.Close()
	s.node.Close()
}

// node is a personal node attached through a tunnel, serving test handlers.
type node struct {
	id     identity.ID
	client *Client
	cancel context.CancelFunc
}

// echoServer is a local TCP echo service.
func echoServer(t *testing.T) string { return echotest.Start(t) }

func newNode(t *testing.T, key ed25519.PrivateKey, sns ...*supernode) *node {
	t.Helper()
	return newNodeOpts(t, key, nil, 0, sns...)
}

// newNodeOpts is newNode with libp2p listen addresses and a dial-back port
// (-1: the port the node listens on).
func newNodeOpts(t *testing.T, key ed25519.PrivateKey, listen []string, directPort int, sns ...*supernode) *node {
	t.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, ListenAddrs: listen, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	if directPort < 0 {
		p, err := n.Multiaddrs()[0].ValueForProtocol(ma.P_TCP)
		if err != nil {
			t.Fatal(err)
		}
		directPort, _ = strconv.Atoi(p)
	}
	var ais []peer.AddrInfo
	for _, s := range sns {
		ais = append(ais, s.node.AddrInfo())
	}
	return newNodeAt(t, key, n, directPort, ais)
}

// newNodeAt runs a tunnel on host n to the supernodes at ais, with edits
// applied to its config.
func newNodeAt(t *testing.T, key ed25519.PrivateKey, n *dht.Node, directPort int, ais []peer.AddrInfo, edits ...func(*Config)) *node {
	t.Helper()
	cfg := Config{Host: n.Host(), Key: key, Supernodes: ais, TCP: map[string]string{"echo": echoServer(t)},
		DirectPort: directPort, Logger: testlog.New(t, 0)}
	for _, edit := range edits {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: echotest.HTTP()}
	go srv.Serve(c.Listener())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	nd := &node{id: id, client: c, cancel: cancel}
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		n.Close()
	})
	return nd
}

func waitAttached(t *testing.T, s *supernode, id identity.ID) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if s.relay.Attached(id) {
			return
		}
	}
	t.Fatalf("%s not attached", id.DID())
}

// get fetches path from the node through supernode s's front.
func get(t *testing.T, s *supernode, id identity.ID, method, path string, body io.Reader) (int, string) {
	t.Helper()
	return relayfront.Do(t, s.front.URL, id, method, path, body)
}

// TestThroughRelay: GET, a 64 MB streamed POST checked end to end, a
// WebSocket echo and a raw TCP echo through the mapped port.
func TestThroughRelay(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	nd := newNode(t, nil, sn)
	waitAttached(t, sn, nd.id)

	code, body := get(t, sn, nd.id, "GET", "/hello", nil)
	if code != 200 || !strings.Contains(body, "hello "+relayfront.HostLabel(nd.id)+".relay.invalid") {
		t.Fatalf("GET: %d %q", code, body)
	}

	const size = 64 << 20
	h := sha256.New()
	code, body = get(t, sn, nd.id, "POST", "/sum", io.TeeReader(io.LimitReader(rand.Reader, size), h))
	if want := fmt.Sprintf("%d %x", size, h.Sum(nil)); code != 200 || body != want {
		t.Fatalf("POST: %d %q, want %q", code, body, want)
	}

	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("tcp", sn.front.Listener.Addr().String()) }}
	ws, _, err := d.Dial("ws://"+relayfront.HostLabel(nd.id)+".relay.test/ws", nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	for i := range 3 {
		msg := []byte(fmt.Sprintf("ping %d", i))
		ws.WriteMessage(websocket.TextMessage, msg)
		if _, got, err := ws.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("websocket echo: %q %v", got, err)
		}
	}
	ws.Close()

	port := nd.client.Status().Supernodes[0].Ports["echo"]
	if port == 0 {
		t.Fatalf("no mapped port: %+v", nd.client.Status())
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "raw tcp\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "raw tcp\n" {
		t.Fatalf("tcp echo: %q %v", line, err)
	}
}

// TestFailover: with two supernodes the node is attached to both; when one
// dies the other still reaches it, and a node that reconnects gets the same
// mapped port back.
func TestFailover(t *testing.T) {
	a, b := newSupernode(t, relay.Limits{}), newSupernode(t, relay.Limits{})
	nd := newNode(t, nil, a, b)
	waitAttached(t, a, nd.id)
	waitAttached(t, b, nd.id)
	for len(nd.client.Attached()) != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	portB := nd.client.Status().Supernodes[1].Ports["echo"]
	a.stop()
	if code, body := get(t, b, nd.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("through B after A died: %d %q", code, body)
	}
	for end := time.Now().Add(10 * time.Second); len(nd.client.Attached()) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("attached %v after A died", nd.client.Attached())
		}
	}
	// A network change that leaves the connection working (an address
	// added, say): the connection and the attachment stay.
	since := nd.client.Status().Supernodes[1].Since
	nd.client.Reconnect()
	time.Sleep(probeTimeout + 500*time.Millisecond)
	if st := nd.client.Status().Supernodes[1]; !st.Attached || !st.Since.Equal(since) || st.Ports["echo"] != portB {
		t.Fatalf("after a network change on a working connection: %+v (attached since %v before)", st, since)
	}
	if code, _ := get(t, b, nd.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("after the network change: %d", code)
	}
}

// TestReconnectReplacesDeadConnection: after a network change, a
// connection that no longer carries anything (a NAT that forgot it; here
// a proxy that stops forwarding) is replaced within seconds, without
// waiting for the missed keep-alives, and the node gets its port back.
func TestReconnectReplacesDeadConnection(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	px, _, nd := newProxiedNode(t, sn)
	before := waitLink(t, nd, time.Time{})
	px.freeze()
	start := time.Now()
	nd.client.Reconnect()
	for {
		st := nd.client.Status().Supernodes[0]
		if st.Attached && st.Since.After(before.Since) {
			if st.Ports["echo"] != before.Ports["echo"] {
				t.Fatalf("port after reattaching %d, want %d", st.Ports["echo"], before.Ports["echo"])
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("dead connection not replaced: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("reattached %v after the network change", time.Since(start).Round(time.Millisecond))
	if code, body := get(t, sn, nd.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("after reattaching: %d %q", code, body)
	}
}

// TestVanishedNodeDetached: a node attached with attach/2 that vanishes
// without a word (its power cut: here its connection frozen, then the
// node stopped behind it) leaves the supernode's table within its
// server's yamux keep-alive (dht's serverKeepAlive, 5 s) and the
// pong's 10 s, as attach/1's three missed pings did: libp2p's 30 s
// default kept it there for 40 s, and gateways routed visitors to it.
func TestVanishedNodeDetached(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	px, n, nd := newProxiedNode(t, sn)
	waitLink(t, nd, time.Time{})
	px.freeze()
	start := time.Now()
	nd.cancel()
	n.Close()
	testenv.WaitFor(t, 25*time.Second, "the vanished node detached", func() bool { return !sn.relay.Attached(nd.id) })
	t.Logf("detached %v after the node vanished", time.Since(start).Round(100*time.Millisecond))
}

// TestNetworkChangeClosesConnFromGoneAddress: after a network change, a
// connection whose local address is no longer one of the node's
// (Config.LocalAddrs) is closed at once, though it still works and would
// pass the ping.
func TestNetworkChangeClosesConnFromGoneAddress(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var moved atomic.Bool
	nd := newNodeAt(t, key, n, 0, []peer.AddrInfo{sn.node.AddrInfo()}, func(c *Config) {
		c.LocalAddrs = func() ([]netip.Addr, error) {
			if moved.Load() {
				return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
			}
			return interfaceAddrs()
		}
	})
	waitAttached(t, sn, nd.id)
	before := waitLink(t, nd, time.Time{})
	h := n.Host()
	conns := h.Network().ConnsToPeer(sn.node.Host().ID())
	if len(conns) == 0 {
		t.Fatal("no connection to the supernode")
	}
	nd.client.checkConns(h)
	if conns[0].IsClosed() {
		t.Fatal("a network change that kept the local address closed the connection")
	}
	moved.Store(true)
	nd.client.checkConns(h)
	if !conns[0].IsClosed() {
		t.Fatalf("connection from %v still open after its address went away", conns[0].LocalMultiaddr())
	}
	// Not only closed: attached again over a new connection.
	waitLink(t, nd, before.Since)
}

// waitLink waits until the node's first supernode link is attached since
// after the given time, and returns it.
func waitLink(t *testing.T, nd *node, after time.Time) LinkStatus {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := nd.client.Status().Supernodes[0]; st.Attached && st.Since.After(after) {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("not attached since after %v: %+v", after, nd.client.Status().Supernodes[0])
		}
	}
}

// freezeProxy forwards TCP connections to a target; freeze stops the
// ones open at that moment without closing them, and thaw lets what they
// hold through (as TCP's resends do once a line is back).
type freezeProxy struct {
	addr   ma.Multiaddr
	mu     sync.Mutex
	frozen []*atomic.Bool
	thawed chan struct{} // closed by thaw
	stop   chan struct{}
}

func newFreezeProxy(t *testing.T, target ma.Multiaddr) *freezeProxy {
	t.Helper()
	tnet, taddr, err := manet.DialArgs(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{stop: make(chan struct{})}
	p.addr, _ = manet.FromNetAddr(ln.Addr())
	t.Cleanup(func() { close(p.stop); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial(tnet, taddr)
			if err != nil {
				c.Close()
				continue
			}
			f := new(atomic.Bool)
			p.mu.Lock()
			p.frozen = append(p.frozen, f)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if f.Load() {
						// Hold: nothing more passes, nothing closes.
						p.mu.Lock()
						thawed := p.thawed
						p.mu.Unlock()
						select {
						case <-p.stop:
							return
						case <-thawed:
						}
					}
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return p
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.thawed = make(chan struct{})
	for _, f := range p.frozen {
		f.Store(true)
	}
}

func (p *freezeProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.frozen {
		f.Store(false)
	}
	close(p.thawed)
}

// TestStaleSessionReplaced: the same key attaching from a new host (a
// rebooted node whose old connection the relay still holds) replaces the
// old session at once.
func TestStaleSessionReplaced(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	_, key, _ := ed25519.GenerateKey(nil)
	first := newNode(t, key, sn)
	waitAttached(t, sn, first.id)
	start := time.Now()
	second := newNode(t, key, sn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := second.client.WaitAttached(ctx); err != nil {
		t.Fatal("second attach waited for the stale session")
	}
	t.Logf("replaced in %v", time.Since(start))
	first.cancel()
	if code, _ := get(t, sn, second.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("through the new session: %d", code)
	}
}

// TestRefusals: not attached is a quick 502; a node at its stream limit
// gets 503; others keep working.
func TestRefusals(t *testing.T) {
	sn := newSupernode(t, relay.Limits{Streams: 1})
	nd := newNode(t, nil, sn)
	waitAttached(t, sn, nd.id)
	_, other, _ := ed25519.GenerateKey(nil)
	oid, _ := identity.IDFromPublicKey(other.Public().(ed25519.PublicKey))
	start := time.Now()
	if code, body := get(t, sn, oid, "GET", "/hello", nil); code != 502 || !strings.Contains(body, "not attached") {
		t.Fatalf("unattached node: %d %q", code, body)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("502 took %v", time.Since(start))
	}
	// Hold the one stream with a websocket, then a second request is 503.
	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("tcp", sn.front.Listener.Addr().String()) }}
	ws, _, err := d.Dial("ws://"+relayfront.HostLabel(nd.id)+".relay.test/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, sn, nd.id, "GET", "/hello", nil); code != 503 {
		t.Fatalf("beyond the stream limit: %d %q", code, body)
	}
	ws.Close()
	// The slot comes back once the websocket's stream is closed.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := get(t, sn, nd.id, "GET", "/hello", nil); code == 200 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("stream slot not released")
		}
	}
}

// TestDialBack: a node listening on its libp2p port is found direct; one
// whose port has nothing, or another node's listener, stays relayed.
func TestDialBack(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	direct := newNodeOpts(t, nil, []string{"/ip4/127.0.0.1/tcp/0"}, -1, sn)
	waitMode := func(nd *node, want string) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			st := nd.client.Status()
			if st.Mode == want && st.DialBack != "" {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("mode %q, want %q: %+v", st.Mode, want, st)
			}
		}
	}
	waitMode(direct, "direct")
	if d := direct.client.Direct(); len(d) != 1 || !strings.HasPrefix(d[0], "/ip4/127.0.0.1/tcp/") {
		t.Fatalf("direct addrs %v", d)
	}
	// Nothing on the port.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	free := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	closed := newNodeOpts(t, nil, nil, free, sn)
	waitMode(closed, "relayed")
	// Another node's libp2p listener on the port: the handshake proves
	// the wrong key.
	p, _ := direct.client.cfg.Host.Addrs()[0].ValueForProtocol(ma.P_TCP)
	port, _ := strconv.Atoi(p)
	impostor := newNodeOpts(t, nil, nil, port, sn)
	waitMode(impostor, "relayed")
	if st := impostor.client.Status(); !strings.Contains(st.DialBack, "handshake") {
		t.Fatalf("impostor's dial-back: %q", st.DialBack)
	}
}

// TestTURNCredentialsRefreshed: the credentials that come with the attach
// are asked for again halfway to their expiry, so TURN() never hands out
// expired ones; the status shows the server but not the password.
func TestTURNCredentialsRefreshed(t *testing.T) {
	var issued atomic.Int32
	sn := newSupernodeWith(t, func(c *relayserver.Config) {
		c.TURN = func(id identity.ID) relay.TURNInfo {
			n := issued.Add(1)
			return relay.TURNInfo{Username: fmt.Sprintf("%d:%s", n, id.DID()), Password: fmt.Sprintf("secret %d", n),
				Expires: time.Now().Add(2 * time.Second).Unix(), URIs: []string{"turn:192.0.2.1:3478?transport=udp"}}
		}
	})
	nd := newNode(t, nil, sn)
	waitAttached(t, sn, nd.id)
	var first string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		creds := nd.client.TURN()
		if len(creds) == 1 && first == "" {
			first = creds[0].Username
		}
		if len(creds) == 1 && first != "" && creds[0].Username != first {
			if !strings.HasSuffix(creds[0].Username, ":"+nd.id.DID()) || creds[0].Password == "" {
				t.Fatalf("refreshed credentials %+v", creds[0])
			}
			st, _ := json.Marshal(nd.client.Status())
			if strings.Contains(string(st), "secret") || !strings.Contains(string(st), "turn:192.0.2.1:3478") {
				t.Fatalf("status shows the password or lacks the TURN server: %s", st)
			}
			return
		}
	}
	t.Fatalf("credentials not refreshed: first %q, issued %d", first, issued.Load())
}

// TestBandwidthLimit: the relay holds a node's upload to its bandwidth
// limit (a limiter that did nothing would pass 12 MiB in milliseconds).
func TestBandwidthLimit(t *testing.T) {
	const limit, size = 4 << 20, 12 << 20
	sn := newSupernode(t, relay.Limits{BytesPerSecond: limit})
	nd := newNode(t, nil, sn)
	waitAttached(t, sn, nd.id)
	start := time.Now()
	code, body := get(t, sn, nd.id, "POST", "/sum", io.LimitReader(rand.Reader, size))
	took := time.Since(start)
	if code != 200 || !strings.HasPrefix(body, fmt.Sprint(size)+" ") {
		t.Fatalf("POST: %d %q", code, body)
	}
	// The first 4 MiB are the bucket's burst, the other 8 take 2 s.
	t.Logf("12 MiB at a limit of 4 MiB/s took %v", took.Round(time.Millisecond))
	if took < 1500*time.Millisecond {
		t.Fatalf("12 MiB through a 4 MiB/s limit took only %v", took)
	}
}

// newLinkNode is a node attached to a supernode through a freezeProxy,
// whose link is down while down is true (Config.LinkDown). Keep-alives
// are as in production (5 s): the tests' outages are shorter than the
// three missed ones that end a session either way.
func newLinkNode(t *testing.T) (sn *supernode, px *freezeProxy, nd *node, down *atomic.Bool) {
	sn = newSupernodeWith(t, func(c *relayserver.Config) { c.KeepAlive = 5 * time.Second })
	down = new(atomic.Bool)
	px, _, nd = newProxiedNode(t, sn, func(c *Config) {
		c.LinkDown = func(netip.Addr) bool { return down.Load() }
	})
	return sn, px, nd, down
}

// newProxiedNode is a node on a host of its own (returned), attached to
// sn through a freezeProxy; edits change its config.
func newProxiedNode(t *testing.T, sn *supernode, edits ...func(*Config)) (*freezeProxy, *dht.Node, *node) {
	t.Helper()
	px := newFreezeProxy(t, sn.node.Multiaddrs()[0])
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	nd := newNodeAt(t, key, n, 0, []peer.AddrInfo{{ID: sn.node.Host().ID(), Addrs: []ma.Multiaddr{px.addr}}}, edits...)
	waitAttached(t, sn, nd.id)
	return px, n, nd
}

// TestReconnectWaitsWhileLinkDown: a connection is kept through a network
// change while the link it goes out of is down (Config.LinkDown: a line
// that drops for a few seconds, whose connections survive it); once the
// link is up again, the next change's ping decides, and a connection that
// does not answer is replaced.
func TestReconnectWaitsWhileLinkDown(t *testing.T) {
	_, px, nd, down := newLinkNode(t)
	before := waitLink(t, nd, time.Time{})
	down.Store(true)
	px.freeze() // nothing passes while the link is down
	nd.client.Reconnect()
	time.Sleep(probeTimeout + 500*time.Millisecond)
	if st := nd.client.Status().Supernodes[0]; !st.Attached || !st.Since.Equal(before.Since) {
		t.Fatalf("while the link is down the attachment changed: %+v (attached since %v before)", st, before.Since)
	}
	down.Store(false)
	nd.client.Reconnect()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if st := nd.client.Status().Supernodes[0]; st.Attached && st.Since.After(before.Since) {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the dead connection was not replaced once the link was up: %+v", nd.client.Status().Supernodes[0])
		}
	}
}

// TestProbeSentWhileLinkDown (issue 21): a network change while the
// link is down sends no ping (it would wait in TCP's resend backoff, and
// its answer come after its time was up: a 2 s flap's ping timed out just
// before the link-up's change, and the node left a working supernode).
// The link-up's change pings, and the connection, answering once the line
// carries again, is kept.
func TestProbeSentWhileLinkDown(t *testing.T) {
	sn, px, nd, down := newLinkNode(t)
	before := waitLink(t, nd, time.Time{})
	down.Store(true)
	px.freeze()
	nd.client.Reconnect() // the link-down event
	time.Sleep(probeTimeout - 300*time.Millisecond)
	down.Store(false) // the line is back
	time.Sleep(500 * time.Millisecond)
	nd.client.Reconnect() // the link-up event, after the first ping's time
	time.Sleep(300 * time.Millisecond)
	px.thaw() // what the connection holds passes: the ping is answered
	time.Sleep(probeTimeout + 500*time.Millisecond)
	if st := nd.client.Status().Supernodes[0]; !st.Attached || !st.Since.Equal(before.Since) {
		t.Fatalf("the attachment changed after a flap its connection survived: %+v (attached since %v before)", st, before.Since)
	}
	if code, body := get(t, sn, nd.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("after the flap: %d %q", code, body)
	}
}

// TestSetSupernodes (issue 20): the node starts with one supernode and
// is told of two more (its discovery): it attaches to a second at once
// and to both others when the first dies; a supernode no longer listed
// is left, and one listed again is attached to again.
func TestSetSupernodes(t *testing.T) {
	a, b, c := newSupernode(t, relay.Limits{}), newSupernode(t, relay.Limits{}), newSupernode(t, relay.Limits{})
	nd := newNode(t, nil, a)
	waitAttached(t, a, nd.id)
	nd.client.SetSupernodes([]peer.AddrInfo{a.node.AddrInfo(), b.node.AddrInfo(), c.node.AddrInfo()})
	testenv.WaitFor(t, 20*time.Second, "a second attachment", func() bool { return len(nd.client.Attached()) == 2 })
	if n := len(nd.client.Status().Supernodes); n != 3 {
		t.Fatalf("status lists %d supernodes, want 3", n)
	}
	a.stop()
	waitAttached(t, b, nd.id)
	waitAttached(t, c, nd.id)
	if code, body := get(t, c, nd.id, "GET", "/hello", nil); code != 200 {
		t.Fatalf("through C after A died: %d %q", code, body)
	}
	// B is no longer listed: the node leaves it (C and B held the two
	// slots; A is dead).
	nd.client.SetSupernodes([]peer.AddrInfo{a.node.AddrInfo(), c.node.AddrInfo()})
	testenv.WaitFor(t, 10*time.Second, "the node to leave B", func() bool { return !b.relay.Attached(nd.id) })
	if !c.relay.Attached(nd.id) {
		t.Fatal("C was left too")
	}
	// Listed again at once (its loop may still be ending): attached again.
	nd.client.SetSupernodes([]peer.AddrInfo{c.node.AddrInfo(), b.node.AddrInfo()})
	waitAttached(t, b, nd.id)
	nd.client.SetSupernodes(nil) // ignored
	if got := nd.client.Supernodes(); len(got) != 2 || got[0].ID != c.node.Host().ID() {
		t.Fatalf("supernodes after an empty list: %v", got)
	}
}

// TestAttachIgnoresDialBackoff (issue 21): a node whose dial to its
// supernode failed a moment ago (libp2p then refuses dials to that peer
// for 5 s, and longer after each failure) attaches as soon as the
// supernode is there: the tunnel's own backoff, capped at 1 s, spaces its
// attempts. After a supernode restart libp2p's backoff held 10,000 nodes
// back in waves for minutes (docs/benchmarks.md, the attach storm).
func TestAttachIgnoresDialBackoff(t *testing.T) {
	sn := newSupernode(t, relay.Limits{})
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	ai := sn.node.AddrInfo()
	sw := n.Host().Network().(*swarm.Swarm)
	for _, a := range ai.Addrs {
		sw.Backoff().AddBackoff(ai.ID, a)
	}
	if err := n.Host().Connect(context.Background(), ai); err == nil || !strings.Contains(err.Error(), "dial backoff") {
		t.Fatalf("libp2p dialled a peer in its backoff (%v): the test would prove nothing", err)
	}
	start := time.Now()
	nd := newNodeAt(t, key, n, 0, []peer.AddrInfo{ai})
	for !sn.relay.Attached(nd.id) {
		if time.Since(start) > swarm.BackoffBase-time.Second {
			t.Fatalf("not attached within %v: libp2p's dial backoff (%v) held the node back", time.Since(start).Round(time.Millisecond), swarm.BackoffBase)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("attached %v after the failed dial", time.Since(start).Round(time.Millisecond))
}

// TestAttachProtocols: a node attaches with attach/2 where the relay
// speaks it (the relay pings, requests go on control streams) and with
// attach/1 as to a relay of before it (the node pings, requests on the
// attach stream); either way it serves requests, stays attached through
// many keep-alives (a relay that read a quiet node's silence as death,
// or a node that missed the relay's pings, would reattach: a new session
// time), and gets fresh TURN credentials when asked.
func TestAttachProtocols(t *testing.T) {
	for _, c := range []struct {
		name   string
		protos []protocol.ID
	}{{"attach/2", nil}, {"attach/1", []protocol.ID{relay.ProtocolAttach}}} {
		t.Run(c.name, func(t *testing.T) {
			var issued atomic.Int32
			sn := newSupernodeWith(t, func(c *relayserver.Config) {
				c.KeepAlive = 200 * time.Millisecond
				c.TURN = func(id identity.ID) relay.TURNInfo {
					n := issued.Add(1)
					return relay.TURNInfo{Username: fmt.Sprintf("%d:%s", n, id.DID()), Password: "secret",
						Expires: time.Now().Add(2 * time.Second).Unix()}
				}
			})
			_, key, _ := ed25519.GenerateKey(nil)
			n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Logger: testlog.New(t, 8)})
			if err != nil {
				t.Fatal(err)
			}
			nd := newNodeAt(t, key, n, 0, []peer.AddrInfo{sn.node.AddrInfo()}, func(cfg *Config) { cfg.attachProtocols = c.protos })
			waitAttached(t, sn, nd.id)
			since := sn.relay.Sessions()[0].Since
			testenv.WaitFor(t, 10*time.Second, "fresh TURN credentials", func() bool { return issued.Load() >= 3 })
			if code, body := get(t, sn, nd.id, "GET", "/hello", nil); code != 200 {
				t.Fatalf("GET: %d %q", code, body)
			}
			if ss := sn.relay.Sessions(); len(ss) != 1 || !ss[0].Since.Equal(since) {
				t.Fatalf("sessions after %d keep-alives: %+v, want the first one (since %v)", 2*time.Second/(200*time.Millisecond), ss, since)
			}
		})
	}
}
