package relayserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
)

func newHost(t *testing.T, mode dht.Mode, key ed25519.PrivateKey) *dht.Node {
	t.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	cfg := dht.Config{Key: key, Mode: mode, Logger: testlog.New(t, 8)}
	if mode == dht.ModeServer {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	n, err := dht.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// The tests' mapped ports are below Linux's ephemeral range (32768 and
// up), where other tests' outgoing connections and port-0 listeners could
// hold a port a test expects free.
func newRelay(t *testing.T) (*dht.Node, *Relay) {
	t.Helper()
	sn := newHost(t, dht.ModeServer, nil)
	r, err := New(Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 20000, PortMax: 30000, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return sn, r
}

// openAttach connects c to the relay and reads its challenge.
func openAttach(t *testing.T, c, sn *dht.Node) (network.Stream, *relay.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Host().Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	// The relay takes one attach per peer at a time: until it has seen an
	// earlier stream of this peer end, a new one is refused. Retry then.
	for {
		st, err := c.Host().NewStream(ctx, sn.Host().ID(), relay.ProtocolAttach)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := relay.ReadMessage(st)
		if err == nil && ch.Type == relay.TypeChallenge {
			return st, ch
		}
		if ctx.Err() != nil || err == nil && !strings.Contains(ch.Error, "already in progress") {
			t.Fatalf("challenge: %+v %v", ch, err)
		}
		st.Reset()
		time.Sleep(10 * time.Millisecond)
	}
}

func expectRefused(t *testing.T, st network.Stream, want string) {
	t.Helper()
	m, err := relay.ReadMessage(st)
	if err != nil || m.Type != relay.TypeRefused || !strings.Contains(m.Error, want) {
		t.Fatalf("got %+v %v, want refused: %q", m, err, want)
	}
}

func didOf(k ed25519.PrivateKey) string {
	id, _ := identity.IDFromPublicKey(k.Public().(ed25519.PublicKey))
	return id.DID()
}

// TestAttachRefusals: another key attaching as a node's DID, a signature
// by the wrong key, a replayed attach, a stale time and malformed frames
// are refused, and the node itself attaches afterwards.
func TestAttachRefusals(t *testing.T) {
	sn, r := newRelay(t)
	_, victimKey, _ := ed25519.GenerateKey(nil)
	_, attackerKey, _ := ed25519.GenerateKey(nil)
	attacker := newHost(t, dht.ModeClient, attackerKey)
	victim := newHost(t, dht.ModeClient, victimKey)
	now := time.Now()

	// The attacker claims the victim's DID, signing with its own key.
	st, ch := openAttach(t, attacker, sn)
	relay.WriteMessage(st, relay.SignAttach(attackerKey, ch, didOf(victimKey), now, nil))
	expectRefused(t, st, "from the key of")

	// The attacker's own DID but a signature by another key.
	st, ch = openAttach(t, attacker, sn)
	m := relay.SignAttach(victimKey, ch, didOf(attackerKey), now, nil)
	relay.WriteMessage(st, m)
	expectRefused(t, st, "signature does not verify")

	// Replay: an attach the victim signed for one challenge, sent on a
	// new stream (a new challenge).
	st1, ch1 := openAttach(t, victim, sn)
	captured := relay.SignAttach(victimKey, ch1, didOf(victimKey), now, nil)
	st1.Reset()
	st2, _ := openAttach(t, victim, sn)
	relay.WriteMessage(st2, captured)
	expectRefused(t, st2, "replayed")

	// A time far off.
	st, ch = openAttach(t, victim, sn)
	relay.WriteMessage(st, relay.SignAttach(victimKey, ch, didOf(victimKey), now.Add(-time.Hour), nil))
	expectRefused(t, st, "time off")

	// Garbage frames.
	for _, frame := range [][]byte{{0, 0}, {0xff, 0xff}, {0, 3, 'x', 'y', 'z'}, {0, 2, '{', '}'}} {
		st, _ = openAttach(t, victim, sn)
		st.Write(frame)
		expectRefused(t, st, "")
	}
	if len(r.Sessions()) != 0 {
		t.Fatalf("sessions after refusals: %+v", r.Sessions())
	}

	// The victim itself attaches.
	st, ch = openAttach(t, victim, sn)
	relay.WriteMessage(st, relay.SignAttach(victimKey, ch, didOf(victimKey), time.Now(), []string{"ssh"}))
	ok, err := relay.ReadMessage(st)
	if err != nil || ok.Type != relay.TypeAttached || ok.Ports["ssh"] < 20000 || ok.Ports["ssh"] > 30000 {
		t.Fatalf("victim attach: %+v %v", ok, err)
	}
	if s := r.Sessions(); len(s) != 1 || s[0].DID != didOf(victimKey) {
		t.Fatalf("sessions %+v", s)
	}
}

// attachNode attaches c (with key) to the relay on a new control stream.
func attachNode(t *testing.T, c, sn *dht.Node, key ed25519.PrivateKey) network.Stream {
	t.Helper()
	st, ch := openAttach(t, c, sn)
	relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), nil))
	if m, err := relay.ReadMessage(st); err != nil || m.Type != relay.TypeAttached {
		t.Fatalf("attach: got %+v %v, want attached", m, err)
	}
	return st
}

// TestAttachProtectsConnection: an attached node's connection is
// protected from the connection manager's trimming while it is attached
// (also across a re-attach that replaces its session), and no longer
// once it detaches or the relay closes.
func TestAttachProtectsConnection(t *testing.T) {
	sn, r := newRelay(t)
	cm := sn.Host().ConnManager()
	_, key, _ := ed25519.GenerateKey(nil)
	node := newHost(t, dht.ModeClient, key)
	p := node.Host().ID()
	if cm.IsProtected(p, protectTag) {
		t.Fatal("protected before attaching")
	}
	attachNode(t, node, sn, key)
	if !cm.IsProtected(p, protectTag) {
		t.Fatal("attached node's connection not protected")
	}
	st := attachNode(t, node, sn, key) // replaces the first session
	if !cm.IsProtected(p, protectTag) {
		t.Fatal("not protected after a re-attach replaced the session")
	}

	st.Reset() // detach
	for deadline := time.Now().Add(10 * time.Second); cm.IsProtected(p, protectTag) || len(r.Sessions()) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after detaching: protected %v, sessions %d; want unprotected, 0",
				cm.IsProtected(p, protectTag), len(r.Sessions()))
		}
		time.Sleep(10 * time.Millisecond)
	}

	attachNode(t, node, sn, key)
	r.Close()
	if cm.IsProtected(p, protectTag) {
		t.Fatal("still protected after the relay closed")
	}
}

// TestAttachFlood: a node opening hundreds of attach streams at once gets
// one in progress and refusals for the rest; another node attaches
// meanwhile.
func TestAttachFlood(t *testing.T) {
	sn, r := newRelay(t)
	flooder := newHost(t, dht.ModeClient, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := flooder.Host().Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := flooder.Host().NewStream(ctx, sn.Host().ID(), relay.ProtocolAttach)
			if err != nil {
				mu.Lock()
				refused++ // the resource manager said no
				mu.Unlock()
				return
			}
			m, err := relay.ReadMessage(st)
			if err != nil || m.Type == relay.TypeRefused {
				mu.Lock()
				refused++
				mu.Unlock()
			}
			// A challenge: hold the stream without answering.
		}()
	}
	_, key, _ := ed25519.GenerateKey(nil)
	good := newHost(t, dht.ModeClient, key)
	st, ch := openAttach(t, good, sn)
	relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), nil))
	if m, err := relay.ReadMessage(st); err != nil || m.Type != relay.TypeAttached {
		t.Fatalf("good node during the flood: %+v %v", m, err)
	}
	wg.Wait()
	if refused < 190 {
		t.Fatalf("only %d of 200 flood streams refused", refused)
	}
	id, _ := identity.ParseDID(didOf(key))
	if !r.Attached(id) {
		t.Fatal("good node not attached")
	}
}

// TestPreferredPort: a fresh table offers a service its preferred port
// first; once another holds that port, the next ones.
func TestPreferredPort(t *testing.T) {
	pt, err := loadPorts("", 20000, 22000, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	id, _ := identity.ParseDID(didOf(key))
	want := PreferredPort(id, "echo", 20000, 22000)
	attached := map[string]bool{"someone": true}
	if c := pt.candidates(portKey(id, "echo"), attached); len(c) != 2001 || c[0] != want {
		t.Fatalf("candidates start at %d of %d, want the preferred %d", c[0], len(c), want)
	}
	if err := pt.assign("someone\x00else", want, time.Now(), attached); err != nil {
		t.Fatal(err)
	}
	if c := pt.candidates(portKey(id, "echo"), attached); len(c) != 2000 || c[0] == want {
		t.Fatalf("candidates after %d was taken: first %d of %d", want, c[0], len(c))
	}
}

// TestCloseDuringPortMapping: the relay closing (or listing its
// sessions) while an attach is still mapping the node's ports neither
// races on the session's ports nor leaves a mapped port listening.
func TestCloseDuringPortMapping(t *testing.T) {
	sn, r := newRelay(t)
	r.cfg.Limits.Ports = 4
	_, key, _ := ed25519.GenerateKey(nil)
	c := newHost(t, dht.ModeClient, key)
	st, ch := openAttach(t, c, sn)
	services := []string{"a", "b", "c", "d"}
	stop := make(chan struct{})
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		for {
			select {
			case <-stop:
				return
			default:
				r.Sessions()
			}
		}
	}()
	relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), services))
	go relay.ReadMessage(st) // attached, or nothing if Close comes first
	// Close at a random moment: before, during or after the mapping.
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	r.Close()
	close(stop)
	<-listed
	for _, s := range r.Sessions() {
		t.Errorf("session %s left after Close", s.DID)
	}
	// Every port the attach mapped is closed again.
	for _, name := range services {
		var id identity.ID
		copy(id[:], key.Public().(ed25519.PublicKey))
		port := PreferredPort(id, name, 20000, 30000)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			t.Errorf("port %d of %s still taken after Close: %v", port, name, err)
		} else {
			ln.Close()
		}
	}
}

// assigned returns id's assigned ports by service.
func (t *portTable) assigned(id identity.ID) map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	prefix := portKey(id, "")
	out := map[string]int{}
	for k, e := range t.byKey {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			out[name] = e.Port
		}
	}
	return out
}

// TestReattachCannotHoardPorts: one key attaching again and again, each
// time with new service names, holds only the ports of its latest
// attach (at most Limits.Ports), in memory and in the saved table, where
// every attach used to reserve ports for good.
func TestReattachCannotHoardPorts(t *testing.T) {
	sn := newHost(t, dht.ModeServer, nil)
	file := filepath.Join(t.TempDir(), "relay-ports.json")
	r, err := New(Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 20000, PortMax: 30000, PortsFile: file, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	_, key, _ := ed25519.GenerateKey(nil)
	var id identity.ID
	copy(id[:], key.Public().(ed25519.PublicKey))
	c := newHost(t, dht.ModeClient, key)
	var last map[string]int
	for i := range 10 {
		services := []string{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)}
		st, ch := openAttach(t, c, sn)
		relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), services))
		m, err := relay.ReadMessage(st)
		if err != nil || m.Type != relay.TypeAttached || len(m.Ports) != 2 {
			t.Fatalf("attach %d: got %+v %v, want attached with 2 ports", i, m, err)
		}
		last = m.Ports
		st.Reset()
	}
	if got := r.ports.assigned(id); !reflect.DeepEqual(got, last) {
		t.Errorf("assigned ports: got %v, want only the last attach's %v", got, last)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var saved map[string]portEntry
	if err := json.Unmarshal(b, &saved); err != nil || len(saved) != 2 {
		t.Errorf("saved table: got %d entries (%v), want 2", len(saved), err)
	}
}

// TestForwardShares (issue 16, findings 1 and 3): only a peer that
// Forwarders accepts may forward to an attached node, each within half of
// the node's streams; the local gateway keeps the rest.
func TestForwardShares(t *testing.T) {
	sn, r := newRelay(t)
	gw := newHost(t, dht.ModeClient, nil)
	stranger := newHost(t, dht.ModeClient, nil)
	r.cfg.Limits.Streams = 8
	r.cfg.Forwarders = func(_ context.Context, p peer.ID) bool { return p == gw.Host().ID() }
	_, key, _ := ed25519.GenerateKey(nil)
	node := newHost(t, dht.ModeClient, key)
	node.Host().SetStreamHandler(relay.ProtocolHTTP, func(st network.Stream) { io.Copy(io.Discard, st); st.Close() })
	attachNode(t, node, sn, key)
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := relay.Forward(ctx, stranger.Host(), sn.AddrInfo(), id, relay.ProtocolHTTP); !errors.Is(err, relay.ErrForwardRefused) || !strings.Contains(err.Error(), "not a gateway") {
		t.Fatalf("a stranger's forward: got %v, want refused as not a gateway", err)
	}
	for i := range 4 {
		c, err := relay.Forward(ctx, gw.Host(), sn.AddrInfo(), id, relay.ProtocolHTTP)
		if err != nil {
			t.Fatalf("gateway forward %d: %v", i, err)
		}
		defer c.Close()
	}
	if _, err := relay.Forward(ctx, gw.Host(), sn.AddrInfo(), id, relay.ProtocolHTTP); !errors.Is(err, relay.ErrForwardRefused) || !strings.Contains(err.Error(), "share") {
		t.Fatalf("a forward past the gateway's share: got %v, want refused", err)
	}
	for i := range 4 {
		st, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
		if err != nil {
			t.Fatalf("the local gateway's stream %d while the other holds its share: %v", i, err)
		}
		defer st.Close()
	}
}

// TestPortFloodFromFreshKeys (issue 16, finding 4): fresh keys from one
// address attaching with services get ports only up to PortNodesPerAddr
// nodes at a time; when the range is full, a new node takes the port of
// the node detached longest ago; assignments unused for PortsUnusedFor
// are dropped; a table in the first format (ports alone) still loads.
func TestPortFloodFromFreshKeys(t *testing.T) {
	sn := newHost(t, dht.ModeServer, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "relay-ports.json")
	var nowNs atomic.Int64 // the relay reads the clock in its own goroutines
	nowNs.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNs.Load()) }
	advance := func(d time.Duration) { nowNs.Add(int64(d)) }
	r, err := New(Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 21000, PortMax: 21003, PortsFile: file,
		PortNodesPerAddr: 2, PortsUnusedFor: 24 * time.Hour, Now: clock, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	attach := func(services ...string) (network.Stream, *relay.Message, identity.ID) {
		t.Helper()
		_, key, _ := ed25519.GenerateKey(nil)
		id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
		c := newHost(t, dht.ModeClient, key)
		st, ch := openAttach(t, c, sn)
		relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), clock(), services))
		m, err := relay.ReadMessage(st)
		if err != nil || m.Type != relay.TypeAttached {
			t.Fatalf("attach: got %+v %v", m, err)
		}
		return st, m, id
	}
	// Two fresh keys from 127.0.0.1 get two ports each (the range is 4)...
	st1, m1, id1 := attach("a", "b")
	st2, m2, _ := attach("a", "b")
	if len(m1.Ports) != 2 || len(m2.Ports) != 2 {
		t.Fatalf("ports of the first two nodes: %v %v", m1.Ports, m2.Ports)
	}
	// ...a third from the same address gets none.
	st3, m3, _ := attach("a")
	if len(m3.Ports) != 0 {
		t.Fatalf("a third node from one address got ports %v", m3.Ports)
	}
	st3.Reset()
	// The first detaches; later, with the range full, a new node gets
	// a port of its (the detached node's) anyway.
	st1.Reset()
	testenv.WaitFor(t, 10*time.Second, "the first node to detach", func() bool { return !r.Attached(id1) })
	advance(time.Hour)
	st4, m4, _ := attach("c")
	if len(m4.Ports) != 1 {
		t.Fatalf("a new node while the range is full of a detached node's ports: %v", m4.Ports)
	}
	p4 := m4.Ports["c"]
	if p4 != m1.Ports["a"] && p4 != m1.Ports["b"] {
		t.Fatalf("the new node got %d, not a port of the detached node (%v)", p4, m1.Ports)
	}
	if got := r.ports.assigned(id1); len(got) != 1 {
		t.Fatalf("the detached node keeps %v, want its one port not taken", got)
	}
	// A day later its last assignment is dropped at the next assignment.
	st4.Reset()
	st2.Reset()
	advance(25 * time.Hour)
	st5, _, _ := attach("d")
	defer st5.Reset()
	if got := r.ports.assigned(id1); len(got) != 0 {
		t.Fatalf("assignments unused for a day still held: %v", got)
	}

	// The first format still loads.
	old := filepath.Join(dir, "old.json")
	os.WriteFile(old, []byte(`{"did:boson:x\u0000ssh": 21001}`), 0o600)
	pt, err := loadPorts(old, 21000, 21003, time.Hour, clock())
	if err != nil || pt.byKey["did:boson:x\x00ssh"].Port != 21001 {
		t.Fatalf("first-format table: %+v %v", pt.byKey, err)
	}
}

// TestConnectShares: any peer may connect to an attached node
// (/pc2/connect/1, node-to-node), but one peer holds at most 1/32 of the
// node's streams that way and all such peers together 1/4, so the
// node's visitors keep the rest.
func TestConnectShares(t *testing.T) {
	sn, r := newRelay(t)
	r.cfg.Limits.Streams = 64 // per peer 2, all peers 16
	_, key, _ := ed25519.GenerateKey(nil)
	node := newHost(t, dht.ModeClient, key)
	sink := func(st network.Stream) { io.Copy(io.Discard, st); st.Close() }
	node.Host().SetStreamHandler(relay.ProtocolPeer, sink)
	node.Host().SetStreamHandler(relay.ProtocolHTTP, sink)
	attachNode(t, node, sn, key)
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var peers []*dht.Node
	for range 9 {
		peers = append(peers, newHost(t, dht.ModeClient, nil))
	}
	for i := range 2 {
		c, err := relay.Connect(ctx, peers[0].Host(), sn.AddrInfo(), id)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		defer c.Close()
	}
	if _, err := relay.Connect(ctx, peers[0].Host(), sn.AddrInfo(), id); !errors.Is(err, relay.ErrForwardRefused) || !errors.Is(err, relay.ErrBusy) || !strings.Contains(err.Error(), "this peer holds its share") {
		t.Fatalf("a connect past the peer's share: got %v", err)
	}
	for _, p := range peers[1:8] {
		for range 2 {
			c, err := relay.Connect(ctx, p.Host(), sn.AddrInfo(), id)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer c.Close()
		}
	}
	if _, err := relay.Connect(ctx, peers[8].Host(), sn.AddrInfo(), id); !errors.Is(err, relay.ErrForwardRefused) || !strings.Contains(err.Error(), "other nodes hold their share") {
		t.Fatalf("a connect past all peers' share: got %v", err)
	}
	// The node's visitors still have their streams.
	for i := range 8 {
		st, err := r.OpenStream(ctx, id, relay.ProtocolHTTP)
		if err != nil {
			t.Fatalf("a visitor's stream %d: %v", i, err)
		}
		defer st.Close()
	}
	// Connecting to a node that is not attached here is refused.
	_, other, _ := ed25519.GenerateKey(nil)
	oid, _ := identity.IDFromPublicKey(other.Public().(ed25519.PublicKey))
	if _, err := relay.Connect(ctx, peers[8].Host(), sn.AddrInfo(), oid); !errors.Is(err, relay.ErrForwardRefused) {
		t.Fatalf("a connect to a node not attached: %v", err)
	}
}

// TestForwardProtocols: a gateway forwards spliced TLS (relay.ProtocolTLS)
// as it forwards HTTP, and the stream is the node's; a forward that asks
// for any other protocol (a mapped TCP service, a peer connection) is
// refused.
func TestForwardProtocols(t *testing.T) {
	sn, r := newRelay(t)
	gw := newHost(t, dht.ModeClient, nil)
	r.cfg.Forwarders = func(_ context.Context, p peer.ID) bool { return p == gw.Host().ID() }
	_, key, _ := ed25519.GenerateKey(nil)
	node := newHost(t, dht.ModeClient, key)
	node.Host().SetStreamHandler(relay.ProtocolTLS, func(st network.Stream) { io.Copy(st, st); st.Close() })
	attachNode(t, node, sn, key)
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := relay.Forward(ctx, gw.Host(), sn.AddrInfo(), id, relay.ProtocolTLS)
	if err != nil {
		t.Fatalf("forwarded TLS: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello node")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello node" {
		t.Fatalf("echo through the forwarded TLS stream: %q %v", buf, err)
	}
	for _, p := range []protocol.ID{relay.ProtocolTCP, relay.ProtocolPeer, "/pc2/other/1"} {
		if _, err := relay.Forward(ctx, gw.Host(), sn.AddrInfo(), id, p); !errors.Is(err, relay.ErrForwardRefused) || !strings.Contains(err.Error(), "no such stream") {
			t.Errorf("a forward for %s: got %v, want refused", p, err)
		}
	}
}

// TestMaxNodes (issue 21): a relay that holds its most nodes refuses a
// new one with the reason (the node goes to its next supernode), lets an
// attached one attach again, and takes a new one once another left.
func TestMaxNodes(t *testing.T) {
	sn := newHost(t, dht.ModeServer, nil)
	r, err := New(Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 20000, PortMax: 30000, MaxNodes: 2, Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	attach := func(key ed25519.PrivateKey, h *dht.Node) (network.Stream, *relay.Message) {
		st, ch := openAttach(t, h, sn)
		relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), nil))
		m, err := relay.ReadMessage(st)
		if err != nil {
			t.Fatal(err)
		}
		return st, m
	}
	var keys []ed25519.PrivateKey
	var hosts []*dht.Node
	var streams []network.Stream
	for range 2 {
		_, key, _ := ed25519.GenerateKey(nil)
		h := newHost(t, dht.ModeClient, key)
		st, m := attach(key, h)
		if m.Type != relay.TypeAttached {
			t.Fatalf("attach within the limit: %+v", m)
		}
		keys, hosts, streams = append(keys, key), append(hosts, h), append(streams, st)
	}
	_, third, _ := ed25519.GenerateKey(nil)
	h3 := newHost(t, dht.ModeClient, third)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h3.Host().Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	st, err := h3.Host().NewStream(ctx, sn.Host().ID(), relay.ProtocolAttach)
	if err != nil {
		t.Fatal(err)
	}
	expectRefused(t, st, "the most nodes it takes (2)")
	// An attached node attaching again is not a new one.
	streams[0].Reset()
	if _, m := attach(keys[0], hosts[0]); m.Type != relay.TypeAttached {
		t.Fatalf("an attached node again: %+v", m)
	}
	// One leaves: the third gets its place.
	hosts[1].Host().Network().ClosePeer(sn.Host().ID())
	id1, _ := identity.ParseDID(didOf(keys[1]))
	for end := time.Now().Add(10 * time.Second); r.Attached(id1); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the node that left is still attached")
		}
	}
	if _, m := attach(third, h3); m.Type != relay.TypeAttached {
		t.Fatalf("a new node once another left: %+v", m)
	}
}
