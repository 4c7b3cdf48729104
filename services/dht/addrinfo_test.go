package dht

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
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
