package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

func newPeer(t *testing.T) (identity.ID, peer.ID) {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(nil)
	id, err := identity.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p, err := IDToPeer(id)
	if err != nil {
		t.Fatal(err)
	}
	return id, p
}

// TestGatewaySet: static peers and the gateways a domain record lists are
// trusted, strangers are not; a stranger's streams resolve the records at
// most once per MinRefresh; a gateway added to the record is trusted at
// the next resolution; a failed resolution keeps the last list.
func TestGatewaySet(t *testing.T) {
	_, static := newPeer(t)
	g1ID, g1 := newPeer(t)
	g2ID, g2 := newPeer(t)
	_, stranger := newPeer(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var lookups atomic.Int32
	var fail atomic.Bool
	listed := []records.Peer{{ID: g1ID}}
	s, err := NewGatewaySet(GatewaysConfig{
		Resolve: func(_ context.Context, d string) (*records.Domain, error) {
			lookups.Add(1)
			if fail.Load() {
				return nil, errors.New("network down")
			}
			if d != "pc2.test" {
				return nil, ErrNotFound
			}
			return &records.Domain{Domain: d, Gateways: listed}, nil
		},
		Domains: func() []string { return []string{"pc2.test", "other.test"} },
		Static:  []peer.ID{static},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if !s.Allowed(ctx, static) || lookups.Load() != 0 {
		t.Fatalf("a static peer: want trusted without a lookup (%d lookups)", lookups.Load())
	}
	if !s.Allowed(ctx, g1) {
		t.Fatal("a listed gateway is not trusted")
	}
	base := lookups.Load()
	for range 100 {
		if s.Allowed(ctx, stranger) {
			t.Fatal("a stranger is trusted")
		}
	}
	if lookups.Load() != base {
		t.Fatalf("a stranger's streams resolved the records %d times within MinRefresh", lookups.Load()-base)
	}
	listed = append(listed, records.Peer{ID: g2ID})
	if s.Allowed(ctx, g2) {
		t.Fatal("a gateway added to the record is trusted before the next resolution may run")
	}
	now = now.Add(DefaultGatewaysMinRefresh)
	if !s.Allowed(ctx, g2) {
		t.Fatal("a gateway added to the record is not trusted after MinRefresh")
	}
	fail.Store(true)
	now = now.Add(DefaultGatewaysMaxAge)
	if !s.Allowed(ctx, g1) || !s.Allowed(ctx, g2) {
		t.Fatal("a failed resolution dropped the last list")
	}
}

// TestGatewaySetPinnedOperator: with pinned operators (a client node,
// whose DHT takes any self-consistent record), a domain record signed by
// another key lists nobody the set trusts, and a domain without a pin is
// not trusted at all.
func TestGatewaySetPinnedOperator(t *testing.T) {
	opID, _ := newPeer(t)
	forgerID, _ := newPeer(t)
	gID, g := newPeer(t)
	rec := &records.Domain{Domain: "pc2.test", Operator: forgerID, Gateways: []records.Peer{{ID: gID}}}
	s, err := NewGatewaySet(GatewaysConfig{
		Resolve: func(_ context.Context, d string) (*records.Domain, error) { r := *rec; r.Domain = d; return &r, nil },
		Domains: func() []string { return []string{"pc2.test", "unpinned.test"} },
		Operator: func(d string) (identity.ID, bool) {
			return opID, d == "pc2.test"
		},
		MinRefresh: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Allowed(context.Background(), g) {
		t.Fatal("a gateway listed by a forged domain record (or an unpinned domain) is trusted")
	}
	rec.Operator = opID
	if !s.Allowed(context.Background(), g) {
		t.Fatal("a gateway the pinned operator lists is not trusted")
	}
}

// TestListGateway: supernodes holding the operator key list themselves in
// the domain record one after the other, each keeping the gateways
// already listed (the first stays first: the domain's primary); listing
// again with the same addresses publishes nothing until half the
// record's life has passed; a key that is not the domain's operator is
// refused by the network.
func TestListGateway(t *testing.T) {
	net := newTestNetwork(t, 3)
	a, b := net.nodes[0], net.nodes[1]
	op := operatorKey()
	// c listed itself 16 days ago: past half the record's life, it lists
	// itself again. (Its clock is read by its own loops: atomic.)
	var ago atomic.Int64
	ago.Store(int64(DomainListTTL/2 + 24*time.Hour))
	c, err := New(context.Background(), Config{Key: testKey("gateway c"), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{a.AddrInfo()}, Trust: net.trust, Logger: testLogger(t),
		Now: func() time.Time { return time.Now().Add(-time.Duration(ago.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bootstrap(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if published, err := c.ListGateway(ctxT(t, 20*time.Second), testDomain, "", op); err != nil || !published {
		t.Fatalf("c, 16 days ago: published %v, %v", published, err)
	}
	ago.Store(0)
	if published, err := c.ListGateway(ctxT(t, 20*time.Second), testDomain, "", op); err != nil || !published {
		t.Fatalf("c, past half the record's life: published %v, %v, want a renewal", published, err)
	}
	for i, n := range []*Node{a, b} {
		if published, err := n.ListGateway(ctxT(t, 20*time.Second), testDomain, "", op); err != nil || !published {
			t.Fatalf("gateway %d: published %v, %v", i, published, err)
		}
	}
	rec, err := net.nodes[2].ResolveDomain(ctxT(t, 20*time.Second), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	aID, _ := a.ID()
	bID, _ := b.ID()
	cID, _ := c.ID()
	if len(rec.Gateways) != 3 || rec.Gateways[0].ID != cID || rec.Gateways[1].ID != aID || rec.Gateways[2].ID != bID || rec.Operator != idOf(t, op) {
		t.Fatalf("domain record: %+v, want c, a, b in the order they listed themselves", rec)
	}
	if published, err := a.ListGateway(ctxT(t, 20*time.Second), testDomain, "", op); err != nil || published {
		t.Fatalf("listing again: published %v, %v, want nothing to do", published, err)
	}
	if _, err := a.ListGateway(ctxT(t, 20*time.Second), testDomain, "", testKey("not the operator")); err == nil {
		t.Fatal("a record by another key than the pinned operator was published")
	}
}
