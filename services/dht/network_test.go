package dht

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

const testDomain = "pc2.test"

// testKey derives a deterministic key from a label.
func testKey(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("pc2 dht test key " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

func idOf(t testing.TB, k ed25519.PrivateKey) identity.ID {
	t.Helper()
	id, err := identity.IDFromPublicKey(k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testNetwork is a set of supernodes on loopback, each with its own data dir.
type testNetwork struct {
	t     testing.TB
	nodes []*Node
	keys  []ed25519.PrivateKey
	dirs  []string
	trust records.TrustMap
}

func operatorKey() ed25519.PrivateKey { return testKey("operator") }

func newTestNetwork(t testing.TB, n int) *testNetwork {
	t.Helper()
	net := &testNetwork{t: t, trust: records.TrustMap{testDomain: idOf(t, operatorKey())}}
	for i := 0; i < n; i++ {
		net.keys = append(net.keys, testKey(fmt.Sprint("supernode-", i)))
		net.dirs = append(net.dirs, t.TempDir())
		net.nodes = append(net.nodes, nil)
	}
	// Start the first node, then the rest in parallel bootstrapping from it.
	net.start(0, nil)
	boot := []peer.AddrInfo{net.nodes[0].AddrInfo()}
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); net.start(i, boot) }()
	}
	wg.Wait()
	net.refresh()
	t.Cleanup(func() {
		for _, nd := range net.nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	return net
}

func (net *testNetwork) start(i int, boot []peer.AddrInfo) {
	t := net.t
	nd, err := New(context.Background(), Config{
		Key:         net.keys[i],
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap:   boot,
		DataDir:     net.dirs[i],
		Trust:       net.trust,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Errorf("start node %d: %v", i, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nd.Bootstrap(ctx); err != nil {
		t.Errorf("bootstrap node %d: %v", i, err)
	}
	net.nodes[i] = nd
}

// refresh makes every node look itself up, so routing tables are full
// before the test starts (a real network converges the same way over time).
func (net *testNetwork) refresh() {
	var wg sync.WaitGroup
	for _, nd := range net.nodes {
		if nd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-nd.DHT().RefreshRoutingTable()
		}()
	}
	wg.Wait()
}

func (net *testNetwork) client(t testing.TB, via ...int) *Node {
	t.Helper()
	var boot []peer.AddrInfo
	for _, i := range via {
		boot = append(boot, net.nodes[i].AddrInfo())
	}
	c, err := New(context.Background(), Config{
		Key:                 testKey(fmt.Sprint("client-", time.Now().UnixNano())),
		Mode:                ModeClient,
		ListenAddrs:         []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap:           boot,
		AllowUnknownDomains: true,
		Logger:              testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func didRecord(t testing.TB, key ed25519.PrivateKey, seq uint64, issued time.Time, ttl time.Duration) []byte {
	t.Helper()
	rec := &records.DID{
		Version:  records.Version,
		ID:       idOf(t, key),
		Seq:      seq,
		IssuedAt: issued.Unix(),
		Expires:  issued.Add(ttl).Unix(),
		Direct:   []string{"/ip4/192.0.2.7/tcp/4200"},
		Services: []records.Service{{Name: "cloud", Endpoint: "http://192.0.2.7:4200"}},
	}
	v, err := records.SignDID(key, rec)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// resolveSeqEverywhere checks that every node resolves id to seq.
func (net *testNetwork) resolveSeqEverywhere(t *testing.T, id identity.ID, want uint64) {
	t.Helper()
	var wg sync.WaitGroup
	for i, nd := range net.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := nd.ResolveDID(ctxT(t, 30*time.Second), id)
			if err != nil {
				t.Errorf("node %d: resolve: %v", i, err)
				return
			}
			if d.Seq != want {
				t.Errorf("node %d: got seq %d, want %d", i, d.Seq, want)
			}
		}()
	}
	wg.Wait()
}

func TestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("20-node network: skipped in -short")
	}
	net := newTestNetwork(t, 20)
	alice := testKey("alice")
	aliceID := idOf(t, alice)
	now := time.Now()

	t.Run("PublishAnywhereResolvesEverywhere", func(t *testing.T) {
		if _, err := net.nodes[7].Publish(ctxT(t, 30*time.Second), records.DIDKey(aliceID), didRecord(t, alice, 1, now, time.Hour)); err != nil {
			t.Fatal(err)
		}
		net.resolveSeqEverywhere(t, aliceID, 1)
	})

	t.Run("HigherSeqWinsEverywhere", func(t *testing.T) {
		if err := net.nodes[13].Put(ctxT(t, 30*time.Second), records.DIDKey(aliceID), didRecord(t, alice, 2, now, time.Hour)); err != nil {
			t.Fatal(err)
		}
		net.resolveSeqEverywhere(t, aliceID, 2)
	})

	t.Run("ClientPublishesAndResolves", func(t *testing.T) {
		bob := testKey("bob")
		c := net.client(t, 3)
		if _, err := c.Publish(ctxT(t, 30*time.Second), records.DIDKey(idOf(t, bob)), didRecord(t, bob, 5, now, time.Hour)); err != nil {
			t.Fatal(err)
		}
		net.resolveSeqEverywhere(t, idOf(t, bob), 5)
	})

	t.Run("NameAndDomain", func(t *testing.T) {
		op := operatorKey()
		dom := &records.Domain{Version: 1, Domain: testDomain, Operator: idOf(t, op), Seq: 1,
			IssuedAt: now.Unix(), Expires: now.Add(24 * time.Hour).Unix(),
			Gateways: []records.Peer{{ID: idOf(t, net.keys[0]), Addrs: []string{"/ip4/127.0.0.1/tcp/443"}}}}
		dv, err := records.SignDomain(op, dom)
		if err != nil {
			t.Fatal(err)
		}
		if err := net.nodes[2].Put(ctxT(t, 30*time.Second), records.DomainKey(testDomain), dv); err != nil {
			t.Fatal(err)
		}
		fqdn := "alice." + testDomain
		nv := nameRecord(t, op, alice, fqdn, 1, now)
		if err := net.nodes[4].Put(ctxT(t, 30*time.Second), records.NameKey(fqdn), nv); err != nil {
			t.Fatal(err)
		}
		res, err := net.client(t, 19).ResolveName(ctxT(t, 30*time.Second), fqdn)
		if err != nil {
			t.Fatal(err)
		}
		if res.Name.Grant.DID != aliceID || res.DID == nil || res.DID.Seq != 2 || res.Domain == nil {
			t.Fatalf("got %+v, want alice's name, domain and did seq 2", res)
		}
	})

	t.Run("BadInputRefused", func(t *testing.T) {
		testBadInputs(t, net, alice, now)
	})

	t.Run("RestartKeepsRecords", func(t *testing.T) {
		const k = 11
		if err := net.nodes[k].Close(); err != nil {
			t.Fatal(err)
		}
		net.nodes[k] = nil
		net.start(k, []peer.AddrInfo{net.nodes[0].AddrInfo()})
		if t.Failed() {
			return
		}
		// Stop every other supernode: only the restarted one can answer.
		for i, nd := range net.nodes {
			if i != k {
				nd.Close()
			}
		}
		d, err := net.client(t, k).ResolveDID(ctxT(t, 30*time.Second), aliceID)
		if err != nil {
			t.Fatal(err)
		}
		if d.Seq != 2 {
			t.Fatalf("got seq %d after restart, want 2", d.Seq)
		}
	})
}

func nameRecord(t testing.TB, op, holder ed25519.PrivateKey, fqdn string, seq uint64, now time.Time) []byte {
	t.Helper()
	nonce := make([]byte, 16)
	binary.BigEndian.PutUint64(nonce, seq)
	sc, err := records.SignClaim(holder, &records.Claim{Version: 1, Name: fqdn, DID: idOf(t, holder), Action: records.ActionHold, IssuedAt: now.Unix(), Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	v, err := records.SignGrant(op, &records.Grant{Version: 1, Name: fqdn, DID: idOf(t, holder), Seq: seq,
		Status: records.StatusActive, IssuedAt: now.Unix(), Expires: now.Add(24 * time.Hour).Unix(), Operator: idOf(t, op)}, &sc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// permissive accepts anything: the validator of a rogue node that tries to
// push bad records onto honest ones.
type permissive struct{}

func (permissive) Validate(string, []byte) error        { return nil }
func (permissive) Select(string, [][]byte) (int, error) { return 0, nil }

func testBadInputs(t *testing.T, net *testNetwork, alice ed25519.PrivateKey, now time.Time) {
	aliceID := idOf(t, alice)
	mallory := testKey("mallory")
	good := didRecord(t, alice, 3, now, time.Hour)
	forged := append([]byte(nil), good...)
	forged[len(forged)-3] ^= 0x40 // inside the signature, the envelope's last field

	// A record for alice's ID signed with mallory's key: sign as mallory,
	// then claim alice's ID in the body by re-signing a body with alice's ID.
	wrongKey := func() []byte {
		rec := records.DID{Version: 1, ID: idOf(t, mallory), Seq: 9, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix()}
		v, err := records.SignDID(mallory, &rec)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}()
	oversize := func() []byte {
		rec := records.DID{Version: 1, ID: aliceID, Seq: 10, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix()}
		for i := 0; i < 16; i++ {
			rec.Names = append(rec.Names, fmt.Sprintf("%0250d", i))
			rec.Services = append(rec.Services, records.Service{Name: fmt.Sprintf("%0250d", i), Endpoint: fmt.Sprintf("%0250d", i)})
		}
		v, err := records.SignDID(alice, &rec)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}()
	if len(oversize) <= records.MaxRecordSize {
		t.Fatalf("oversize record is only %d bytes", len(oversize))
	}
	forgedGrant := nameRecord(t, mallory, mallory, "alice."+testDomain, 99, now)

	cases := []struct {
		name  string
		key   string
		value []byte
		check string // key whose stored value must not become value
	}{
		{"ForgedSignature", records.DIDKey(aliceID), forged, ""},
		{"WrongKey", records.DIDKey(aliceID), wrongKey, ""},
		{"Replay", records.DIDKey(aliceID), didRecord(t, alice, 1, now, time.Hour), ""},
		{"Expired", records.DIDKey(aliceID), didRecord(t, alice, 20, now.Add(-3*time.Hour), time.Hour), ""},
		{"Future", records.DIDKey(aliceID), didRecord(t, alice, 21, now.Add(time.Hour), time.Hour), ""},
		{"Oversize", records.DIDKey(aliceID), oversize, ""},
		{"UnknownNamespace", "/pk/" + aliceID.String(), good, ""},
		{"Garbage", records.DIDKey(aliceID), []byte("\xa1\x01garbage\xff\x00"), ""},
		{"ForgedOperatorGrant", records.NameKey("alice." + testDomain), forgedGrant, ""},
	}

	// Honest nodes refuse every case when asked to put it locally.
	for _, c := range cases {
		if err := net.nodes[0].Put(ctxT(t, 10*time.Second), c.key, c.value); err == nil {
			t.Errorf("%s: honest put accepted", c.name)
		}
	}

	// A rogue node pushes them anyway; no honest node may store them.
	rogue, err := New(context.Background(), Config{
		Key:         mallory,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap:   []peer.AddrInfo{net.nodes[1].AddrInfo()},
		Logger:      testLogger(t),
		DHTOptions:  []kaddht.Option{kaddht.Validator(permissive{})},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	if err := rogue.Bootstrap(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	<-rogue.DHT().RefreshRoutingTable()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The rogue node's local store takes anything; the network must not.
			_ = rogue.Put(ctxT(t, 20*time.Second), c.key, c.value)
			for i, nd := range net.nodes {
				got, err := getLocal(nd, ctxT(t, 10*time.Second), c.key)
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatalf("node %d: %v", i, err)
				}
				if err == nil && string(got) == string(c.value) {
					t.Fatalf("node %d stored the %s record", i, c.name)
				}
			}
		})
	}
	// Control: the same channel does deliver a valid record, so the checks
	// above would have seen a bad one stored.
	carol := testKey("carol")
	carolKey, carolVal := records.DIDKey(idOf(t, carol)), didRecord(t, carol, 1, now, time.Hour)
	if err := rogue.Put(ctxT(t, 20*time.Second), carolKey, carolVal); err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, nd := range net.nodes {
		if got, err := getLocal(nd, ctxT(t, 10*time.Second), carolKey); err == nil && string(got) == string(carolVal) {
			stored++
		}
	}
	if stored == 0 {
		t.Fatalf("control: no honest node stored a valid record pushed by the rogue node")
	}
	// And resolution still gives alice's good record.
	net.resolveSeqEverywhere(t, aliceID, 2)
}
