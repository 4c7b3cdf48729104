package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// only443 is a home router's firewall that lets nothing out but TCP 443
// and DNS (a hotel's, an office's): new flows from the LAN to anything
// else are dropped, before the router's NAT rules accept them.
const only443 = `table inet only443 {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname "lan" oifname "wan" ct state new tcp dport { 53, 443 } accept
		iifname "lan" oifname "wan" ct state new udp dport 53 accept
		iifname "lan" oifname "wan" ct state new counter drop
	}
}
`

// TestAttachOver443 (issue 18): alice's home router lets only TCP 443
// and DNS out, so her node cannot reach supernode A's relay on 8090/TCP
// nor QUIC. Its config lists A at both its TCP address and
// relay.pc2.test on port 443 (libp2p's secure WebSocket transport): it
// attaches through A's gateway, whose SNI router hands relay.pc2.test to
// A's libp2p listener, and is reachable at https://alice.pc2.test. Her
// link goes down while her router restarts (it forgets its flows) and
// comes back: she attaches again over port 443 and is reachable within
// seconds (target 2 s).
func TestAttachOver443(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	opFile, opID, _ := keyFile(t, dir, "operator.key")
	aKey, _, aPeer := keyFile(t, dir, "a.key")
	nodeKey, nodeID, _ := keyFile(t, dir, "alice.key")
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: 80, TLSPort: 443, Host: tp.Client.Addr().String(),
		Command: func(name string, args ...string) *exec.Cmd {
			return tp.Client.Command(context.Background(), name, args...)
		},
		Dial: tp.Client.Dial})
	name := "alice." + testDomain
	for _, n := range []string{testDomain, name, "relay." + testDomain} {
		if err := pb.AddA(n, tp.SupernodeA.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	start(t, tp.SupernodeA, "supernode", "supernode-a", &supernode.Config{KeyFile: aKey, DataDir: filepath.Join(dir, "a"),
		Listen:  []string{"/ip4/0.0.0.0/tcp/8090", "/ip4/0.0.0.0/udp/8090/quic-v1"},
		Domains: []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}}, AllowPrivateDials: true,
		Gateway: &supernode.GatewayConfig{HTTPListen: ":80", HTTPSListen: ":443", OperatorKeys: map[string]string{testDomain: opFile},
			ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}}})
	if err := tp.Home1.Nft(only443); err != nil {
		t.Fatal(err)
	}

	// The node trusts Pebble's issuing root for relay.pc2.test's
	// certificate (SSL_CERT_FILE).
	rootsPEM, err := pb.IssuingRootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(rootFile, rootsPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	alice := startEnv(t, tp.Node1, "node", "alice", &personal.Config{KeyFile: nodeKey, Mode: personal.ModeRelayed, Supernodes: []string{
		fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), aPeer),
		fmt.Sprintf("/ip4/%s/udp/8090/quic-v1/p2p/%s", tp.SupernodeA.Addr(), aPeer),
		fmt.Sprintf("/ip4/%s/tcp/443/tls/sni/relay.%s/ws/p2p/%s", tp.SupernodeA.Addr(), testDomain, aPeer),
	}}, "SSL_CERT_FILE="+rootFile)

	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	user := userClient(tp.Client, tp.SupernodeA.Addr().String(), roots)
	key, err := identity.LoadKeyFile(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	if ni, err := (&namesapi.Client{HTTP: user}).Claim(context.Background(), key, name, ""); err != nil || ni.DID != nodeID.DID() {
		t.Fatalf("claim: %+v %v", ni, err)
	}
	base := "https://" + name
	took := waitOK(t, user, base+"/hello", time.Minute)
	t.Logf("%s reachable %v after its claim, attached over port 443", name, took.Round(time.Millisecond))
	if st := status(t, tp, name, tp.SupernodeA); !st.Attached || st.LastRoute != "relay" {
		t.Fatalf("?status: %+v, want attached to A", st)
	}
	// The firewall dropped the node's tries on 8090 (TCP and QUIC).
	out, err := tp.Home1.Command(context.Background(), "nft", "list", "table", "inet", "only443").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "counter packets 0 ") {
		t.Fatalf("the firewall dropped nothing: the node did not try 8090\n%s", out)
	}

	// The home link goes down for 3 s and comes back, twice: the second
	// time the router restarted meanwhile (it forgot its flows), so the
	// node's connection to A is dead and it attaches again. The target
	// (2 s) is a figure this test prints; it fails only far beyond it
	// (a stuck reconnect), not on a slow machine.
	for _, restart := range []bool{false, true} {
		if err := tp.Node1.SetLink(false); err != nil {
			t.Fatal(err)
		}
		if restart {
			if err := tp.Home1.FlushConntrack(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(3 * time.Second)
		if err := tp.Node1.SetLink(true); err != nil {
			t.Fatal(err)
		}
		back := waitOK(t, user, base+"/hello", 30*time.Second)
		t.Logf("%s reachable %v after its link came back (router restarted: %v), over port 443 (target 2 s)", name, back.Round(time.Millisecond), restart)
		if code, body := fetch(t, user, "GET", base+"/hello", nil); code != 200 || !strings.Contains(body, "hello "+name) {
			t.Fatalf("after the flap: %d %q", code, body)
		}
	}
	if n := strings.Count(alice.Log(), `msg=attached`); n < 2 {
		t.Errorf("the node attached %d times; want again after the flap:\n%s", n, alice.Log())
	}
}
