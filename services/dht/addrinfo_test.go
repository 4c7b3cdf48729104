package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/internal/testing/testenv"
)

func testPeerID(t *testing.T, seed byte) peer.ID {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	pk, err := crypto.UnmarshalEd25519PublicKey(ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The configured order is a preference and survives parsing, whatever the
// map order of the day; a peer named twice keeps its first place and gets
// both addresses.
func TestParseAddrInfosKeepsOrder(t *testing.T) {
	var ids []peer.ID
	var addrs []string
	for i := range 8 {
		id := testPeerID(t, byte(i+1))
		ids = append(ids, id)
		addrs = append(addrs, fmt.Sprintf("/ip4/192.0.2.%d/tcp/8090/p2p/%s", i+1, id))
	}
	addrs = append(addrs, fmt.Sprintf("/ip4/198.51.100.1/udp/39001/quic-v1/p2p/%s", ids[0]))
	for range 20 {
		got, err := ParseAddrInfos(addrs)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ids) {
			t.Fatalf("got %d peers, want %d", len(got), len(ids))
		}
		for i, ai := range got {
			if ai.ID != ids[i] {
				t.Fatalf("peer %d: got %s, want %s (the configured order)", i, ai.ID, ids[i])
			}
		}
		if len(got[0].Addrs) != 2 || got[0].Addrs[1].String() != "/ip4/198.51.100.1/udp/39001/quic-v1" {
			t.Fatalf("first peer's addresses: got %v, want both in order", got[0].Addrs)
		}
	}
	if _, err := ParseAddrInfos([]string{"/ip4/192.0.2.1/tcp/8090"}); err == nil {
		t.Error("an address without /p2p: got no error")
	}
	if _, err := ParseAddrInfos([]string{"not an address"}); err == nil {
		t.Error("a malformed address: got no error")
	}
}

// Announced addresses follow the listening ones in what the host tells
// peers (identify) and in Multiaddrs; a peer learns them on connecting.
// A malformed one, or one naming a peer, stops the node at start.
func TestAnnounce(t *testing.T) {
	const public = "/ip4/203.0.113.7/tcp/8090"
	a := startNode(t, "announcer", ModeServer, nil, func(c *Config) { c.Announce = []string{public, "/dns4/sn1.pc2.test/tcp/8090"} })
	var got []string
	for _, m := range a.Multiaddrs() {
		got = append(got, m.String())
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "/ip4/127.0.0.1/tcp/") || got[1] != public+"/p2p/"+a.Host().ID().String() {
		t.Fatalf("multiaddrs %v: want the listening one, then the announced", got)
	}
	b := startNode(t, "learner", ModeClient, []peer.AddrInfo{{ID: a.Host().ID(), Addrs: a.Host().Addrs()[:1]}}, nil)
	testenv.WaitFor(t, 10*time.Second, "the peer to learn the announced address", func() bool {
		return slices.ContainsFunc(b.Host().Peerstore().Addrs(a.Host().ID()), func(m ma.Multiaddr) bool { return m.String() == public })
	})
	for _, bad := range []string{"203.0.113.7:8090", "/ip4/203.0.113.7/tcp/8090/p2p/" + a.Host().ID().String()} {
		_, err := New(context.Background(), Config{Key: testKey("bad"), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Announce: []string{bad}})
		if err == nil || !strings.Contains(err.Error(), "announce") {
			t.Errorf("announce %q: %v, want refused", bad, err)
		}
	}
}
