package relayserver

import (
	"context"
	"crypto/ed25519"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/relay"
)

// TestAttach2: a node attached with attach/2 never writes on its stream
// and is pinged by the relay; its requests come on control streams
// (ping, turn; a peer not attached gets none answered); resetting its
// stream ends the session.
func TestAttach2(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sn, r, node, st := attach2(t, ctx, 200*time.Millisecond)
	control := func(h *dht.Node, m *relay.Message) (*relay.Message, error) {
		st, err := h.Host().NewStream(ctx, sn.Host().ID(), relay.ProtocolControl)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		if err := relay.WriteMessage(st, m); err != nil {
			return nil, err
		}
		return relay.ReadMessage(st)
	}
	other := newHost(t, dht.ModeClient, nil)
	if err := other.Host().Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if m, err := control(other, &relay.Message{Type: relay.TypePing}); err == nil {
		t.Fatalf("a peer not attached got an answer: %+v", m)
	}
	id, _ := dht.PeerToID(node.Host().ID())
	if !r.Attached(id) {
		t.Fatal("not attached")
	}
	// The relay's pings, for longer than 3 keep-alives of silence from
	// the node.
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 5 {
		if m, err := relay.ReadMessage(st); err != nil || m.Type != relay.TypePing {
			t.Fatalf("waiting for the relay's ping: %+v %v", m, err)
		}
	}
	if !r.Attached(id) {
		t.Fatal("a silent attach/2 node was detached")
	}
	if m, err := control(node, &relay.Message{Type: relay.TypePing}); err != nil || m.Type != relay.TypePong {
		t.Fatalf("control ping: %+v %v", m, err)
	}
	if m, err := control(node, &relay.Message{Type: relay.TypeTURN}); err != nil || m.Type != relay.TypeTURN || m.Error == "" {
		t.Fatalf("control turn at a relay without TURN: %+v %v", m, err)
	}
	if m, err := control(node, &relay.Message{Type: relay.TypeAttached}); err != nil || m.Type != relay.TypeRefused {
		t.Fatalf("an unexpected control request: %+v %v", m, err)
	}
	st.Reset() // the node leaves
	testenv.WaitFor(t, 5*time.Second, "the session to end", func() bool { return !r.Attached(id) })
}

// TestAttach2ConnClosed: an attach/2 node's session ends as soon as its
// connection does, not at the next ping (here an hour away).
func TestAttach2ConnClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, r, node, st := attach2(t, ctx, time.Hour)
	id, _ := dht.PeerToID(node.Host().ID())
	if !r.Attached(id) {
		t.Fatal("not attached")
	}
	st.Conn().Close()
	testenv.WaitFor(t, 5*time.Second, "the session to end with its connection", func() bool { return !r.Attached(id) })
}

// attach2 starts a relay with keepAlive and a node attached to it with
// attach/2, and returns them and its attach stream.
func attach2(t *testing.T, ctx context.Context, keepAlive time.Duration) (*dht.Node, *Relay, *dht.Node, network.Stream) {
	t.Helper()
	sn := newHost(t, dht.ModeServer, nil)
	r, err := New(Config{Host: sn.Host(), ListenIP: "127.0.0.1", PortMin: 20000, PortMax: 30000, KeepAlive: keepAlive,
		Logger: testlog.New(t, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	_, key, _ := ed25519.GenerateKey(nil)
	node := newHost(t, dht.ModeClient, key)
	if err := node.Host().Connect(ctx, sn.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	st, err := node.Host().NewStream(ctx, sn.Host().ID(), relay.ProtocolAttach2)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := relay.ReadMessage(st)
	if err != nil || ch.Type != relay.TypeChallenge {
		t.Fatalf("challenge: %+v %v", ch, err)
	}
	relay.WriteMessage(st, relay.SignAttach(key, ch, didOf(key), time.Now(), nil))
	if ok, err := relay.ReadMessage(st); err != nil || ok.Type != relay.TypeAttached {
		t.Fatalf("attach/2: %+v %v", ok, err)
	}
	return sn, r, node, st
}

// stuckStream is an attach stream whose writes fail with err.
type stuckStream struct {
	network.Stream
	err error
}

func (s stuckStream) Write([]byte) (int, error)        { return 0, s.err }
func (s stuckStream) SetWriteDeadline(time.Time) error { return nil }
func (s stuckStream) Reset() error                     { return nil }

// TestPingSkipsBusyNode: a ping that times out (the node's connection
// busy) leaves the session; one that fails otherwise (the stream reset)
// ends it.
func TestPingSkipsBusyNode(t *testing.T) {
	_, r := newRelay(t)
	for _, c := range []struct {
		err  error
		kept bool
	}{{os.ErrDeadlineExceeded, true}, {network.ErrReset, false}} {
		_, key, _ := ed25519.GenerateKey(nil)
		id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
		p, _ := dht.IDToPeer(id)
		s := &session{id: id, peer: p, quiet: true, done: make(chan struct{}), stream: stuckStream{err: c.err}, ports: map[string]*mappedPort{}}
		r.mu.Lock()
		r.sessions[p] = s
		r.mu.Unlock()
		r.pingAll([]*session{s})
		if r.Attached(id) != c.kept {
			t.Errorf("a ping failing with %v: attached %v, want %v", c.err, !c.kept, c.kept)
		}
	}
}
