package dht

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/services/dht/records"
)

func startNode(t *testing.T, label string, mode Mode, boot []peer.AddrInfo, tweak func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		Key:                 testKey(label),
		Mode:                mode,
		ListenAddrs:         []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap:           boot,
		AllowUnknownDomains: mode == ModeClient,
		Logger:              testLogger(t),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitSeq polls until node resolves id with a seq above min.
func waitSeq(t *testing.T, n *Node, key ed25519.PrivateKey, min uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if d, err := n.ResolveDID(ctxT(t, 5*time.Second), idOf(t, key)); err == nil && d.Seq > min {
			return d.Seq
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no record with seq above %d within 20s", min)
	return 0
}

func TestKeepPublishedResigns(t *testing.T) {
	a := startNode(t, "live-a", ModeServer, nil, nil)
	b := startNode(t, "live-b", ModeServer, []peer.AddrInfo{a.AddrInfo()}, nil)
	owner := testKey("live-owner")
	c := startNode(t, "live-client", ModeClient, []peer.AddrInfo{a.AddrInfo()}, func(c *Config) {
		c.RepublishInterval = 200 * time.Millisecond
	})
	sign := func(seq uint64, now time.Time) ([]byte, error) {
		return records.SignDID(owner, &records.DID{Version: 1, ID: idOf(t, owner), Seq: seq,
			IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix()})
	}
	res, err := c.KeepPublished(ctxT(t, 20*time.Second), records.DIDKey(idOf(t, owner)), sign)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored == 0 {
		t.Fatalf("got %+v, want the record stored", res)
	}
	first := waitSeq(t, b, owner, 0)
	if first != res.Seq {
		t.Fatalf("network has seq %d, KeepPublished reported %d", first, res.Seq)
	}
	// The loop re-signs with a higher seq; b sees it without another call.
	second := waitSeq(t, b, owner, first)
	if second <= first {
		t.Fatalf("got seq %d after republish, want above %d", second, first)
	}
	c.Unpublish(records.DIDKey(idOf(t, owner)))
}

func TestReplicateReachesNewPeers(t *testing.T) {
	// A lone supernode stores a record; the others join later and know
	// nothing of it until one replication pass.
	lone := startNode(t, "repl-lone", ModeServer, nil, func(c *Config) { c.ReplicateInterval = -1 })
	owner := testKey("repl-owner")
	now := time.Now()
	key := records.DIDKey(idOf(t, owner))
	if err := lone.Put(ctxT(t, 10*time.Second), key, didRecord(t, owner, 1, now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	// An expired record in the store (written while it was valid under a
	// clock set in the past) is dropped by the pass.
	old := testKey("repl-old")
	past := now.Add(-3 * time.Hour)
	oldNode := startNode(t, "repl-old-node", ModeServer, nil, func(c *Config) {
		c.ReplicateInterval = -1
		c.Now = func() time.Time { return past }
		c.Datastore = lone.store
	})
	oldKey := records.DIDKey(idOf(t, old))
	if err := oldNode.Put(ctxT(t, 10*time.Second), oldKey, didRecord(t, old, 1, past, time.Hour)); err != nil {
		t.Fatal(err)
	}

	others := []*Node{
		startNode(t, "repl-1", ModeServer, []peer.AddrInfo{lone.AddrInfo()}, nil),
	}
	others = append(others, startNode(t, "repl-2", ModeServer, []peer.AddrInfo{others[0].AddrInfo()}, nil))
	for _, o := range others {
		if _, err := getLocal(o, ctxT(t, 5*time.Second), key); err == nil {
			t.Fatalf("peer has the record before replication")
		}
	}
	// The pass puts to the peers the lone node's routing table knows: wait
	// until both newcomers are in it (they join through each other).
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rt := lone.DHT().RoutingTable()
		if rt.Find(others[0].host.ID()) != "" && rt.Find(others[1].host.ID()) != "" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("newcomers not in the lone node's routing table: %v", rt.ListPeers())
		}
	}
	put, dropped := lone.Replicate(ctxT(t, 30*time.Second))
	if put != 1 || dropped != 1 {
		t.Fatalf("got %d put, %d dropped; want 1 and 1", put, dropped)
	}
	for i, o := range others {
		if _, err := getLocal(o, ctxT(t, 5*time.Second), key); err != nil {
			t.Fatalf("peer %d after replication: %v", i, err)
		}
	}
	if _, err := getLocal(lone, ctxT(t, 5*time.Second), oldKey); err == nil {
		t.Fatalf("expired record still stored after replication")
	}
}

// getLocal returns the value n itself stores under key, or ErrNotFound.
func getLocal(n *Node, ctx context.Context, key string) ([]byte, error) {
	recs, err := n.localRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.key == key {
			return r.value, nil
		}
	}
	return nil, ErrNotFound
}
