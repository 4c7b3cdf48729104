package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestDirectIPv6 (issue 18): carol's node is on an IPv6-only home network
// with a global address and its port 8090 open (nattest's node6 behind
// home6, no NAT). It attaches to supernode A over IPv6, A's dial-back
// reaches it there, and its did record lists that address as direct.
// Gateway B, where carol is not attached, reaches her directly over IPv6,
// without a relay.
func TestDirectIPv6(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	opFile, opID, _ := keyFile(t, dir, "operator.key")
	aKey, _, aPeer := keyFile(t, dir, "a.key")
	bKey, _, bPeer := keyFile(t, dir, "b.key")
	nodeKey, nodeID, _ := keyFile(t, dir, "carol.key")
	a6 := fmt.Sprintf("/ip6/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr6(), aPeer)
	b4 := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeB.Addr(), bPeer)
	listen := []string{"/ip4/0.0.0.0/tcp/8090", "/ip6/::/tcp/8090"}
	domains := []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}}
	start(t, tp.SupernodeA, "supernode", "supernode-a", &supernode.Config{KeyFile: aKey, DataDir: filepath.Join(dir, "a"),
		Listen: listen, Bootstrap: []string{b4}, Domains: domains, AllowPrivateDials: true})
	start(t, tp.SupernodeB, "supernode", "supernode-b", &supernode.Config{KeyFile: bKey, DataDir: filepath.Join(dir, "b"),
		Listen: listen, Domains: domains, AllowPrivateDials: true,
		Gateway: &supernode.GatewayConfig{HTTPListen: ":80", OperatorKeys: map[string]string{testDomain: opFile}}})
	// The node trusts the gateways the domain's operator lists (B).
	start(t, tp.Node6, "node", "carol", &personal.Config{KeyFile: nodeKey, Supernodes: []string{a6},
		P2PListen:    []string{"/ip6/::/tcp/8090"},
		NameServices: []cloud.NameService{{Domain: testDomain, Operator: opID.DID()}}})

	// The node on its own network sees itself direct at its IPv6 address.
	local := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return tp.Node6.Dial(ctx, "tcp", "[::1]:4200")
		}}}
	var st personal.Status
	testenv.WaitFor(t, time.Minute, "carol direct", func() bool {
		resp, err := local.Get("http://node/api/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&st)
		return st.Mode == "direct"
	})

	// The user's browser, every name resolving to gateway B.
	user := userClient(tp.Client, tp.SupernodeB.Addr().String(), nil)
	key, err := identity.LoadKeyFile(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	name := "carol." + testDomain
	api := &namesapi.Client{API: "http://" + tp.SupernodeB.Addr().String(), HTTP: user}
	if ni, err := api.Claim(context.Background(), key, name, ""); err != nil || ni.DID != nodeID.DID() {
		t.Fatalf("claim: %+v %v", ni, err)
	}
	// Polled as a browser's reloads would be, within the gateway's
	// request limit: B may not find carol's records for a moment.
	waitOK(t, user, "http://"+name+"/hello", 30*time.Second)
	if code, body := fetch(t, user, "GET", "http://"+name+"/hello", nil); code != 200 || !strings.Contains(body, "hello "+name) {
		t.Fatalf("GET through B: %d %q", code, body)
	}
	gs := status(t, tp, name, tp.SupernodeB)
	if gs.LastRoute != "direct" || gs.Attached || len(gs.Direct) == 0 || !strings.HasPrefix(gs.Direct[0], "/ip6/"+tp.Node6.Addr().String()+"/tcp/8090") {
		t.Fatalf("B reached carol by %q (direct addresses %v), want directly at her IPv6 address %s", gs.LastRoute, gs.Direct, tp.Node6.Addr())
	}
}
