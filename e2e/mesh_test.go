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

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
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
		// revoker is the operator's own machine.
		revoker *nattest.Host
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
	// Each operator's two supernodes list themselves in its domain
	// record: a node discovers the second from it.
	for _, o := range ops {
		testenv.WaitFor(t, 3*time.Minute, o.domain+"'s record to list both its supernodes", func() bool {
			var l namesapi.SupernodeList
			c := &namesapi.Client{API: "http://" + o.sns[0].Addr().String(), HTTP: user}
			got, err := c.Supernodes(context.Background(), o.domain)
			if err != nil {
				return false
			}
			l = *got
			return len(l.Supernodes) == 2
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
	ops[0].revoker = tp.AddPublic("operator0", 60)
	start(t, ops[0].revoker, "revoke", "revoke", revokeConfig{OperatorKey: ops[0].opFile, Name: nodes[0].name,
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

// revokeConfig is the revoke role's config: the operator's tool.
type revokeConfig struct {
	OperatorKey string `json:"operator_key"`
	Name        string `json:"name"`
	Reason      string `json:"reason"`
	Bootstrap   string `json:"bootstrap"`
}

// runRevoke is the revoke role of TestHelper: a DHT client that revokes
// a name with the operator key (dht.Node.RevokeName, as pc2 operator
// revoke), says ready, and exits.
func runRevoke(ctx context.Context, path string, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c revokeConfig
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
	if _, _, err := n.RevokeName(ctx, c.Name, op, c.Reason, time.Hour); err != nil {
		return err
	}
	fmt.Println("ready")
	return nil
}
