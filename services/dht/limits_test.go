package dht

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

func limitOf(t *testing.T, s network.ResourceScope) rcmgr.Limit {
	t.Helper()
	sl, ok := s.(rcmgr.ResourceScopeLimiter)
	if !ok {
		t.Fatalf("scope %T has no limit", s)
	}
	return sl.Limit()
}

// hostLimits are a node's system and per-peer resource limits and its
// connection manager's high water.
func hostLimits(t *testing.T, n *Node) (system, perPeer rcmgr.Limit, highWater int) {
	t.Helper()
	limitOf := func(s network.ResourceScope) rcmgr.Limit { return limitOf(t, s) }
	rm := n.Host().Network().ResourceManager()
	rm.ViewSystem(func(s network.ResourceScope) error { system = limitOf(s); return nil })
	other, err := IDToPeer(idOf(t, testKey("some peer")))
	if err != nil {
		t.Fatal(err)
	}
	rm.ViewPeer(other, func(s network.PeerScope) error { perPeer = limitOf(s); return nil })
	cm, ok := n.Host().ConnManager().(*connmgr.BasicConnMgr)
	if !ok {
		t.Fatalf("connection manager %T", n.Host().ConnManager())
	}
	return system, perPeer, cm.GetInfo().HighWater
}

// TestHostLimits: a server is sized for DefaultServerPeers whatever the
// machine's memory, and keeps any one peer to a small share; a client
// keeps libp2p's defaults unless told otherwise.
func TestHostLimits(t *testing.T) {
	start := func(mode Mode, lim Limits) *Node {
		t.Helper()
		_, key, _ := ed25519.GenerateKey(nil)
		n, err := New(context.Background(), Config{Key: key, Mode: mode, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Limits: lim, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}

	sys, per, high := hostLimits(t, start(ModeServer, Limits{}))
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"system inbound conns", int64(sys.GetConnLimit(network.DirInbound)), DefaultServerPeers * 5 / 4},
		{"system inbound streams", int64(sys.GetStreamLimit(network.DirInbound)), 2 * DefaultServerPeers},
		{"system outbound streams", int64(sys.GetStreamLimit(network.DirOutbound)), DefaultServerPeers},
		{"system memory", sys.GetMemoryLimit(), 3 << 30},
		{"connection manager high water", int64(high), DefaultServerPeers * 5 / 4},
		{"per-peer inbound conns", int64(per.GetConnLimit(network.DirInbound)), 8},
		{"per-peer outbound streams", int64(per.GetStreamLimit(network.DirOutbound)), 384},
		{"per-peer memory", per.GetMemoryLimit(), 256 << 20},
	} {
		if c.got != c.want {
			t.Errorf("server %s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	// yamux closes a connection when memory for an incoming stream is
	// refused, so the stream counts must bind first: a peer's streams at
	// their initial windows in half its memory (the other half is for
	// grown windows), the host's in all of it.
	if n, mem := int64(per.GetStreamTotalLimit()), per.GetMemoryLimit(); 2*n*yamuxWindow > mem {
		t.Errorf("server: %d streams per peer need %d bytes of windows, more than half of the peer's %d", n, n*yamuxWindow, mem)
	}
	if n, mem := int64(sys.GetStreamTotalLimit()), sys.GetMemoryLimit(); n*yamuxWindow > mem {
		t.Errorf("server: %d streams need %d bytes of windows, more than the host's %d", n, n*yamuxWindow, mem)
	}
	if int(sys.GetConnTotalLimit()) < high {
		t.Errorf("server: connection manager high water %d above the resource manager's %d connections", high, sys.GetConnTotalLimit())
	}

	// libp2p's defaults: 1/8 of the RAM, 64 inbound connections + 64 per GB.
	sys, _, high = hostLimits(t, start(ModeClient, Limits{}))
	if in := sys.GetConnLimit(network.DirInbound); in >= DefaultServerPeers/4 || high != 192 {
		t.Errorf("client: %d inbound connections, high water %d; want libp2p's defaults (high water 192)", in, high)
	}

	// A personal node takes two relays' 256 streams each, and the stream
	// counts still bind before the memory.
	node := start(ModeClient, NodeLimits())
	sys, per, _ = hostLimits(t, node)
	if in, n, mem := sys.GetStreamLimit(network.DirInbound), int64(sys.GetStreamTotalLimit()), sys.GetMemoryLimit(); in < 512 || n*yamuxWindow > mem {
		t.Errorf("node: %d inbound streams (want >= 512), %d streams need %d bytes of windows, memory %d", in, n, n*yamuxWindow, mem)
	}
	if in := per.GetStreamLimit(network.DirInbound); in < 256 {
		t.Errorf("node: %d inbound streams per peer, want >= 256", in)
	}
	node.Host().Network().ResourceManager().ViewProtocol("/pc2/http/1", func(s network.ProtocolScope) error {
		if in := limitOf(t, s).GetStreamLimit(network.DirInbound); in < 512 {
			t.Errorf("node: %d inbound streams for /pc2/http/1, want >= 512", in)
		}
		return nil
	})

	sys, _, high = hostLimits(t, start(ModeClient, Limits{Peers: 100, Memory: 64 << 20}))
	if in, mem := sys.GetConnLimit(network.DirInbound), sys.GetMemoryLimit(); in != 125 || mem != 64<<20 || high != 125 {
		t.Errorf("client with Limits{100, 64 MiB}: %d inbound connections, memory %d, high water %d; want 125, %d, 125",
			in, mem, high, 64<<20)
	}
}
