package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestMeshNAT (issue 20): three operators, three domains, two supernodes
// each, one DHT; every supernode pins the other operators' domains in
// its mesh and every domain's record lets the mesh serve it. Three
// nodes behind NAT, one per domain, each with one entry point in its
// config, learn their operator's second supernode by themselves. A
// visitor reaches every name through every gateway. Then each node's
// entry point dies, then a whole operator: every name of the surviving
// operators still serves through every surviving gateway. A name its
// operator revokes, and one its holder releases, stop resolving at
// every gateway within a minute.
func TestMeshNAT(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	type operator struct {
		domain string
		opFile string
		opDID  string
		sns    [2]*nattest.Host
		addrs  [2]string
		procs  [2]*nattest.Proc
		// admin is the operator's own machine.
		admin *nattest.Host
	}
	ops := make([]*operator, 3)
	for i := range ops {
		file, id, _ := keyFile(t, dir, fmt.Sprintf("operator%d.key", i))
		o := &operator{domain: fmt.Sprintf("d%d.test", i), opFile: file, opDID: id.DID()}
		for j := range 2 {
			o.sns[j] = tp.AddPublic(fmt.Sprintf("sn%d%d", i, j), byte(40+2*i+j))
		}
		ops[i] = o
	}
	snKeys := map[*nattest.Host]string{}
	for _, o := range ops {
		for j, h := range o.sns {
			key, _, peerID := keyFile(t, dir, h.Name()+".key")
			snKeys[h] = key
			o.addrs[j] = fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", h.Addr(), peerID)
		}
	}
	first := ops[0].addrs[0]
	for i, o := range ops {
		var mesh []supernode.DomainTrust
		for _, other := range ops {
			if other != o {
				mesh = append(mesh, supernode.DomainTrust{Domain: other.domain, Operator: other.opDID})
			}
		}
		for j, h := range o.sns {
			boot := []string{first}
			if i == 0 && j == 0 {
				boot = []string{ops[1].addrs[0]} // it comes up alone, and joins when that one does
			}
			cfg := &supernode.Config{KeyFile: snKeys[h], DataDir: filepath.Join(dir, h.Name()), Listen: []string{"/ip4/0.0.0.0/tcp/8090"},
				Bootstrap: boot, AllowPrivateDials: true,
				Domains: []supernode.DomainTrust{{Domain: o.domain, Operator: o.opDID}}, Mesh: mesh,
				Gateway: &supernode.GatewayConfig{HTTPListen: ":80", OperatorKeys: map[string]string{o.domain: o.opFile},
					MeshOpen: []string{o.domain}}}
			if j == 1 {
				// The second supernode grants under a delegation: the
				// operator key is not on it.
				cfg.Gateway.OperatorKeys, cfg.Gateway.MeshOpen = nil, nil
				cfg.Gateway.Delegations = map[string]string{o.domain: delegate(t, dir, o.opFile, o.domain, snKeys[h])}
			}
			o.procs[j] = start(t, h, "supernode", h.Name(), cfg)
		}
	}
	user := tp.Client.HTTPClient()
	user.Timeout = 10 * time.Second
	// get asks gateway gw for path on host (the visitor's DNS sending
	// the name there).
	get := func(gw *nattest.Host, host, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+gw.Addr().String()+path, nil)
		req.Host = host
		resp, err := user.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b)
	}
	// Each operator lists its delegated supernode in its domain's record
	// (pc2 operator delegate does it, from the operator's machine); the
	// first, which holds the key, lists itself. A node discovers the
	// second from the record.
	for i, o := range ops {
		admin := tp.AddPublic(fmt.Sprintf("operator%d", i), byte(60+i))
		start(t, admin, "operator", fmt.Sprintf("list%d", i), operatorConfig{Action: "list", OperatorKey: o.opFile,
			Domain: o.domain, Peer: o.addrs[1], Bootstrap: o.addrs[0]})
		o.admin = admin
	}
	for _, o := range ops {
		testenv.WaitFor(t, 3*time.Minute, o.domain+"'s record to list both its supernodes", func() bool {
			c := &namesapi.Client{API: "http://" + o.sns[0].Addr().String(), HTTP: user}
			l, err := c.Supernodes(context.Background(), o.domain)
			if err != nil {
				return false
			}
			// After them, the mesh's other operators' supernodes.
			own := 0
			for _, e := range l.Supernodes {
				if e.Domain == o.domain && e.Operator == o.opDID {
					own++
				}
			}
			return own == 2 && len(l.Supernodes) == 6
		})
	}

	// The nodes, behind NAT, each with its operator's first supernode as
	// its only entry point; each claims a name in its domain.
	type node struct {
		name string
		key  string
		proc *nattest.Proc
	}
	nodes := make([]*node, 3)
	for i, o := range ops {
		_, h := tp.AddHome(fmt.Sprintf("home%d", i), byte(50+i))
		key, _, _ := keyFile(t, dir, fmt.Sprintf("node%d.key", i))
		cfg := &personal.Config{KeyFile: key, Mode: personal.ModeRelayed, Supernodes: []string{o.addrs[0]},
			DataDir:      filepath.Join(dir, fmt.Sprintf("node%d", i)),
			NameServices: []cloud.NameService{{Domain: o.domain, API: "http://" + o.sns[0].Addr().String(), Operator: o.opDID}}}
		nodes[i] = &node{name: fmt.Sprintf("node%d.%s", i, o.domain), key: key, proc: start(t, h, "node", fmt.Sprintf("node%d", i), cfg)}
		k, err := identity.LoadKeyFile(key)
		if err != nil {
			t.Fatal(err)
		}
		api := &namesapi.Client{API: "http://" + o.sns[1].Addr().String(), HTTP: user}
		if _, err := api.Claim(context.Background(), k, nodes[i].name, ""); err != nil {
			t.Fatalf("claim %s: %v", nodes[i].name, err)
		}
	}
	gateways := func(skip ...*nattest.Host) []*nattest.Host {
		var out []*nattest.Host
		for _, o := range ops {
		next:
			for _, h := range o.sns {
				for _, s := range skip {
					if s == h {
						continue next
					}
				}
				out = append(out, h)
			}
		}
		return out
	}
	// everywhere waits until every name of nodes answers at every
	// gateway of gws, and reports how long that took.
	everywhere := func(what string, names []*node, gws []*nattest.Host, limit time.Duration) {
		t.Helper()
		begin := time.Now()
		for _, n := range names {
			for _, gw := range gws {
				testenv.WaitFor(t, limit, fmt.Sprintf("%s: %s through %s", what, n.name, gw.Name()), func() bool {
					code, body := get(gw, n.name, "/hello")
					return code == http.StatusOK && strings.Contains(body, "hello "+n.name)
				})
			}
		}
		t.Logf("%s: %d names through %d gateways in %v", what, len(names), len(gws), time.Since(begin).Round(time.Millisecond))
	}
	everywhere("at start", nodes, gateways(), 2*time.Minute)

	// Each node attaches to its operator's second supernode too, which
	// it learned of from the domain record (its config names the first
	// only).
	for i, o := range ops {
		testenv.WaitFor(t, 2*time.Minute, nodes[i].name+" to attach to "+o.sns[1].Name(), func() bool {
			code, body := get(o.sns[1], nodes[i].name, "/?status")
			var st gateway.Status
			return code == http.StatusOK && json.Unmarshal([]byte(body), &st) == nil && st.Attached
		})
	}

	// Every node's entry point dies: the nodes are attached to the
	// second supernode they discovered.
	var dead []*nattest.Host
	for _, o := range ops {
		o.procs[0].Kill()
		dead = append(dead, o.sns[0])
	}
	everywhere("each entry point dead", nodes, gateways(dead...), 2*time.Minute)

	// A whole operator goes: the other two's names still serve through
	// every gateway left.
	ops[1].procs[1].Kill()
	dead = append(dead, ops[1].sns[1])
	everywhere("operator 1 gone", []*node{nodes[0], nodes[2]}, gateways(dead...), 2*time.Minute)

	// Operator 0 revokes node0's name (from a machine of its own, as
	// pc2 operator revoke does): within a minute no gateway serves it.
	start(t, ops[0].admin, "operator", "revoke", operatorConfig{Action: "revoke", OperatorKey: ops[0].opFile, Name: nodes[0].name,
		Reason: "abuse report 7", Bootstrap: ops[0].addrs[1]})
	gone := func(what string, n *node) {
		t.Helper()
		begin := time.Now()
		for _, gw := range gateways(dead...) {
			testenv.WaitFor(t, time.Minute, n.name+" to stop at "+gw.Name(), func() bool {
				code, _ := get(gw, n.name, "/hello")
				return code == http.StatusNotFound
			})
		}
		t.Logf("%s %s: gone from every gateway within %v", n.name, what, time.Since(begin).Round(time.Millisecond))
	}
	gone("revoked", nodes[0])

	// The holder of n2 releases it: within a minute no gateway serves it
	// (their caches keep a resolution 30 s).
	k, err := identity.LoadKeyFile(nodes[2].key)
	if err != nil {
		t.Fatal(err)
	}
	api := &namesapi.Client{API: "http://" + ops[2].sns[1].Addr().String(), HTTP: user}
	if _, err := api.Release(context.Background(), k, nodes[2].name); err != nil {
		t.Fatalf("release %s: %v", nodes[2].name, err)
	}
	gone("released", nodes[2])
}

// delegate writes the operator's delegation of domain to the supernode
// of snKey into dir and returns its path (pc2 operator delegate).
func delegate(t *testing.T, dir, opFile, domain, snKey string) string {
	t.Helper()
	op, err := identity.LoadKeyFile(opFile)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := identity.LoadKeyFile(snKey)
	if err != nil {
		t.Fatal(err)
	}
	opID, _ := identity.IDFromPublicKey(op.Public().(ed25519.PublicKey))
	snID, _ := identity.IDFromPublicKey(sn.Public().(ed25519.PublicKey))
	now := time.Now()
	sd, err := records.SignDelegation(op, &records.Delegation{Version: records.Version, Domain: domain, Operator: opID,
		Supernode: snID, IssuedAt: now.Add(-time.Minute).Unix(), Expires: now.Add(24 * time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sd)
	path := filepath.Join(dir, domain+"-"+snID.String()+".delegation.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// operatorConfig is the operator role's config: the operator's tool,
// revoking a name or listing a supernode in the domain's record.
type operatorConfig struct {
	Action      string `json:"action"` // revoke or list
	OperatorKey string `json:"operator_key"`
	Name        string `json:"name,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Domain      string `json:"domain,omitempty"`
	Peer        string `json:"peer,omitempty"` // a supernode's full multiaddr
	Bootstrap   string `json:"bootstrap"`
}

// runOperator is the operator role of TestHelper: a DHT client that
// revokes a name (dht.Node.RevokeName, as pc2 operator revoke) or lists
// a supernode in a domain's record (dht.Node.ListPeer, as pc2 operator
// delegate), says ready, and exits.
func runOperator(ctx context.Context, path string, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c operatorConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	op, err := identity.LoadKeyFile(c.OperatorKey)
	if err != nil {
		return err
	}
	boot, err := dht.ParseAddrInfos([]string{c.Bootstrap})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(ctx, dht.Config{Key: key, Mode: dht.ModeClient, Bootstrap: boot, AllowUnknownDomains: true, Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	if err := n.Bootstrap(ctx); err != nil {
		return err
	}
	switch c.Action {
	case "revoke":
		_, _, err = n.RevokeName(ctx, c.Name, op, c.Reason, time.Hour)
	case "list":
		// After the supernode holding the key has listed itself: the
		// operator adds a supernode to a domain that is up (two listings
		// made from one old record at once would lose one).
		for seq := uint64(0); seq == 0 && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
			seq, _ = n.CurrentSeq(ctx, records.DomainKey(c.Domain))
		}
		var ais []peer.AddrInfo
		if ais, err = dht.ParseAddrInfos([]string{c.Peer}); err == nil {
			id, perr := dht.PeerToID(ais[0].ID)
			if perr != nil {
				return perr
			}
			p := records.Peer{ID: id}
			for _, a := range ais[0].Addrs {
				p.Addrs = append(p.Addrs, a.String())
			}
			_, err = n.ListPeer(ctx, c.Domain, p, dht.DomainOptions{}, op)
		}
	default:
		err = fmt.Errorf("unknown operator action %q", c.Action)
	}
	if err != nil {
		return err
	}
	fmt.Println("ready")
	return nil
}
