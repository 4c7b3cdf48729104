package personal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
)

// TestDiscovery (issue 20): a node whose config lists one supernode
// learns the operator's other two from the domain record, attaches to
// two, and when its entry point dies stays attached to two by itself;
// started again with only the dead entry point in its config, it
// attaches through the supernodes it saved.
func TestDiscovery(t *testing.T) {
	_, op, _ := ed25519.GenerateKey(nil)
	first := gwtest.Start(t, gwtest.Options{Operator: op})
	gws := []*gwtest.Gateway{first,
		gwtest.Start(t, gwtest.Options{Operator: op, Bootstrap: first.Addrs}),
		gwtest.Start(t, gwtest.Options{Operator: op, Bootstrap: first.Addrs})}
	ids := make([]peer.ID, len(gws))
	for i, g := range gws {
		ais, err := dht.ParseAddrInfos(g.Addrs)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = ais[0].ID
	}
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: first.Addrs,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: first.API}}}
	base, stop := startNode(t, cfg, Options{DiscoverEvery: 500 * time.Millisecond})
	owner := cloudtest.New(t, base, nil)
	owner.CreateIdentity()
	owner.Password("owner password")
	if r := owner.Claim("disco", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim: %d %s", r.Code, r.Err())
	}

	// status reads the node's status from the local network.
	status := func(base string) (known int, attached []peer.ID) {
		r := cloudtest.New(t, base, nil).Get("/api/status")
		var st Status
		if r.Code != http.StatusOK || json.Unmarshal([]byte(r.Body), &st) != nil || st.Tunnel == nil {
			return 0, nil
		}
		for _, l := range st.Tunnel.Supernodes {
			if l.Attached {
				id, _ := peer.Decode(l.ID)
				attached = append(attached, id)
			}
		}
		return len(st.Tunnel.Supernodes), attached
	}
	testenv.WaitFor(t, 30*time.Second, "the node to know all three supernodes and attach to two", func() bool {
		known, attached := status(base)
		return known == 3 && len(attached) == 2
	})
	// Each supernode keeps its presence record: its own did record with
	// its addresses and the domain it serves.
	client := dhtClient(t, gws[0].Addrs)
	for i, g := range gws {
		id, _ := dht.PeerToID(ids[i])
		var d *records.DID
		testenv.WaitFor(t, 30*time.Second, "the presence record of supernode "+g.Addrs[0], func() bool {
			var err error
			d, err = client.ResolveDID(context.Background(), id)
			return err == nil
		})
		if len(d.Direct) == 0 || len(d.Services) != 1 || d.Services[0].Endpoint != "pc2.test" || d.Expires-d.IssuedAt > int64(7*time.Hour/time.Second) {
			t.Errorf("presence record of supernode %d: %+v", i, d)
		}
	}
	gws[0].Stop()
	testenv.WaitFor(t, 30*time.Second, "the node to attach to the other two", func() bool {
		_, attached := status(base)
		return len(attached) == 2 && slices.Contains(attached, ids[1]) && slices.Contains(attached, ids[2])
	})

	// Again, with the dead entry point alone in the config (the first
	// run's node stops: the same key and data).
	stop()
	saved := loadSaved(filepath.Join(cfg.CloudDir(), supernodesFile))
	for _, id := range ids[1:] {
		if !slices.ContainsFunc(saved, func(ai peer.AddrInfo) bool { return ai.ID == id }) {
			t.Fatalf("the stopped node saved %v, without the live supernode %s", saved, id)
		}
	}
	again, _ := startNode(t, cfg, Options{DiscoverEvery: time.Hour})
	testenv.WaitFor(t, 30*time.Second, "the restarted node to attach through the saved supernodes", func() bool {
		_, attached := status(again)
		return len(attached) == 2
	})

	// A node whose config names no supernode, only a name service: its
	// gateway's /api/supernodes is the entry point.
	fresh := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), CreateKey: true, Mode: ModeRelayed,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: gws[1].API}}}
	base3, _ := startNode(t, fresh, Options{DiscoverEvery: time.Hour})
	testenv.WaitFor(t, 30*time.Second, "a node without supernodes in its config to attach through the name service's", func() bool {
		known, attached := status(base3)
		return known >= 2 && len(attached) == 2
	})
}

func TestPreferOther(t *testing.T) {
	id := func(s string) peer.AddrInfo { return peer.AddrInfo{ID: peer.ID(s)} }
	own1, own2, own3, other1, other2 := id("own1"), id("own2"), id("own3"), id("other1"), id("other2")
	ids := func(l []peer.AddrInfo) string {
		var s []string
		for _, ai := range l {
			s = append(s, string(ai.ID))
		}
		return strings.Join(s, " ")
	}
	others := []peer.AddrInfo{other1, other2}
	for _, c := range []struct{ order, want []peer.AddrInfo }{
		{[]peer.AddrInfo{own1, own2, own3, other1}, []peer.AddrInfo{own1, other1, own2, own3}},
		{[]peer.AddrInfo{other1, other2, own1}, []peer.AddrInfo{own1, other1, other2}},
		{[]peer.AddrInfo{own1, other2, own2}, []peer.AddrInfo{own1, other2, own2}},
		{[]peer.AddrInfo{own1, own2}, []peer.AddrInfo{own1, own2}},
	} {
		if got := preferOther(c.order, others, 2); ids(got) != ids(c.want) {
			t.Errorf("%s: got %s, want %s", ids(c.order), ids(got), ids(c.want))
		}
	}
	if got := preferOther([]peer.AddrInfo{own1, own2, own3}, nil, 2); ids(got) != "own1 own2 own3" {
		t.Errorf("without others: %s", ids(got))
	}
}

// TestPresentAt: a listed supernode's own presence record, when it has
// one, gives the addresses the node dials.
func TestPresentAt(t *testing.T) {
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	id1, _ := identity.IDFromPublicKey(k1.Public().(ed25519.PublicKey))
	id2, _ := identity.IDFromPublicKey(k2.Public().(ed25519.PublicKey))
	p1, _ := dht.IDToPeer(id1)
	p2, _ := dht.IDToPeer(id2)
	stale := ma.StringCast("/ip4/192.0.2.1/tcp/8090")
	fresh := "/ip4/198.51.100.7/tcp/8090/p2p/" + p1.String()
	resolve := func(_ context.Context, id identity.ID) (*records.DID, error) {
		if id == id1 {
			return &records.DID{ID: id1, Direct: []string{fresh}}, nil
		}
		return nil, dht.ErrNotFound
	}
	got := presentAt(context.Background(), resolve, []peer.AddrInfo{{ID: p1, Addrs: []ma.Multiaddr{stale}}, {ID: p2, Addrs: []ma.Multiaddr{stale}}})
	if len(got[0].Addrs) != 1 || got[0].Addrs[0].String() != "/ip4/198.51.100.7/tcp/8090" {
		t.Errorf("with a presence record: %v", got[0].Addrs)
	}
	if len(got[1].Addrs) != 1 || !got[1].Addrs[0].Equal(stale) {
		t.Errorf("without one: %v", got[1].Addrs)
	}
}
