package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/browsertest"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway"
)

// TestEndToEndTLSNAT (issue 18): alice's node sits behind NAT attached to
// supernode A, whose gateway serves pc2.test in the default "auto" mode
// with certificates from a Pebble CA on the public segment. Her owner
// sets her up in the wizard on her own network and claims the name. Her
// node's first order is held up (its packets to the CA dropped for a
// while), and a visitor who comes meanwhile is served through the
// gateway's own certificate (the supernode can read it, and the
// dashboard says so). Once the node holds its certificate, new visitors
// get TLS ending at the node (its key, HTTP/2 and WebSocket, their
// address; a Go client and headless Chromium), while the first visitor's
// connection, open all along, still works.
func TestEndToEndTLSNAT(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	opFile, opID, _ := keyFile(t, dir, "operator.key")
	aKey, _, aPeer := keyFile(t, dir, "a.key")
	aAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), aPeer)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: 80, TLSPort: 443, Host: tp.Client.Addr().String(),
		Command: func(name string, args ...string) *exec.Cmd {
			return tp.Client.Command(context.Background(), name, args...)
		},
		Dial: tp.Client.Dial})
	name := "alice." + testDomain
	for _, n := range []string{testDomain, name} {
		if err := pb.AddA(n, tp.SupernodeA.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	start(t, tp.SupernodeA, "supernode", "supernode-a", &supernode.Config{KeyFile: aKey, DataDir: filepath.Join(dir, "a"),
		Listen: []string{"/ip4/0.0.0.0/tcp/8090"}, Domains: []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}},
		AllowPrivateDials: true,
		Gateway: &supernode.GatewayConfig{HTTPListen: ":80", HTTPSListen: ":443", OperatorKeys: map[string]string{testDomain: opFile},
			ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}}})

	// The node trusts Pebble's issuing root for the names API at
	// https://pc2.test (SSL_CERT_FILE), and gets its own certificate
	// from Pebble.
	rootsPEM, err := pb.IssuingRootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(rootFile, rootsPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ncfg := &personal.Config{KeyFile: filepath.Join(dir, "alice", "node.key"), Supernodes: []string{aAddr}, Mode: personal.ModeRelayed,
		DataDir:      filepath.Join(dir, "alice", "cloud"),
		NameServices: []cloud.NameService{{Domain: testDomain, API: "https://" + tp.SupernodeA.Addr().String()}},
		TLS:          &personal.TLSConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}}
	startEnv(t, tp.Node1, "node", "alice", ncfg, "SSL_CERT_FILE="+rootFile)

	// The node's packets to the CA are dropped until the first visitor
	// was served.
	ca, err := url.Parse(pb.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Node1.Nft(fmt.Sprintf("table inet holdca { chain out { type filter hook output priority 0; ip daddr %s tcp dport %s drop; }; }\n",
		ca.Hostname(), ca.Port())); err != nil {
		t.Fatal(err)
	}
	owner := cloudtest.New(t, "http://node", &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return tp.Node1.Dial(ctx, "tcp", "127.0.0.1:4200")
		}}})
	owner.CreateIdentity()
	owner.Password("owner password")
	if r := owner.Claim("alice", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim: %d %s", r.Code, r.Err())
	}
	nodeTLS := func() personal.TLSStatus {
		var st personal.Status
		json.Unmarshal([]byte(owner.Get("/api/status").Body), &st)
		if st.TLS == nil {
			return personal.TLSStatus{}
		}
		return *st.TLS
	}
	testenv.WaitFor(t, 30*time.Second, "the node ordering its certificate", func() bool {
		s := nodeTLS()
		return s.Certificate != nil && s.Certificate.Ordering
	})
	if s := nodeTLS(); s.Mode != personal.TLSGateway || !strings.Contains(s.Why, "getting a certificate") {
		t.Fatalf("while ordering, the node says %+v", s)
	}
	if r := owner.Get("/_/"); !strings.Contains(r.Body, "the supernode can read this traffic") {
		t.Error("while ordering, the dashboard does not say the supernode can read the traffic")
	}

	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	first := userClient(tp.Client, tp.SupernodeA.Addr().String(), roots)
	peer := func(c *http.Client) (string, *tls.ConnectionState) {
		t.Helper()
		resp, err := c.Get("https://" + name + "/peer")
		if err != nil {
			t.Fatalf("visit: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("visit: %s %q", resp.Status, b)
		}
		return string(b), resp.TLS
	}
	body, cs := peer(first)
	if !strings.HasSuffix(body, "tls=false") {
		t.Fatalf("the first visitor, before the node's certificate: the node saw %q; want the gateway's termination", body)
	}
	gatewayLeaf := cs.PeerCertificates[0]
	if st := status(t, tp, name, tp.SupernodeA); st.TLS != gateway.TLSAtGateway || st.TLSMode != "auto" {
		t.Fatalf("?status before the node's certificate: %+v", st)
	}

	// The CA reachable again: the node's order goes on.
	if err := tp.Node1.Nft("delete table inet holdca\n"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 2*time.Minute, "the node's own certificate", func() bool { return nodeTLS().Mode == personal.TLSEndToEnd })
	if r := owner.Get("/_/"); !strings.Contains(r.Body, "end-to-end encrypted") {
		t.Error("the dashboard does not say the traffic is end-to-end encrypted")
	}
	var leaf *tls.ConnectionState
	waitFor := time.Now()
	testenv.WaitFor(t, 30*time.Second, "a new visitor's TLS ending at the node", func() bool {
		c := userClient(tp.Client, tp.SupernodeA.Addr().String(), roots)
		defer c.CloseIdleConnections()
		body, leaf = peer(c)
		return strings.HasSuffix(body, "tls=true")
	})
	t.Logf("end to end %v after the node said it holds its certificate", time.Since(waitFor).Round(time.Millisecond))
	want := tp.Client.Addr().String() + " HTTP/2.0 tls=true"
	if body != want {
		t.Fatalf("a new visitor: the node saw %q, want %q", body, want)
	}
	// A WebSocket through the splice, terminated at the node too.
	wsc := userClient(tp.Client, tp.SupernodeA.Addr().String(), roots)
	tr := wsc.Transport.(*http.Transport)
	wsTLS := tr.TLSClientConfig.Clone()
	wsTLS.NextProtos = []string{"http/1.1"}
	var wsState tls.ConnectionState
	wsTLS.VerifyConnection = func(cs tls.ConnectionState) error { wsState = cs; return nil }
	ws, _, err := (&websocket.Dialer{NetDialContext: tr.DialContext, TLSClientConfig: wsTLS}).Dial("wss://"+name+"/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket: %v", err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("hello alice"))
	if _, m, err := ws.ReadMessage(); err != nil || string(m) != "hello alice" {
		t.Fatalf("WebSocket echo: %q %v", m, err)
	}
	ws.Close()
	// Headless Chromium on the user's device in the topology, trusting
	// the node's key and nothing else: HTTP/2 and a WebSocket, end to
	// end.
	b := browsertest.New(t, browsertest.Options{Netns: tp.Client.NetnsPath(),
		HostRules: []string{"MAP *.pc2.test " + tp.SupernodeA.Addr().String()},
		TrustKeys: []string{browsertest.SPKIHash(leaf.PeerCertificates[0])}})
	b.Navigate("https://" + name + "/peer")
	if got := b.Text("body"); got != want {
		t.Errorf("Chromium: the node saw %q, want %q", got, want)
	}
	if p := b.Eval(`performance.getEntriesByType("navigation")[0].nextHopProtocol`); p != "h2" {
		t.Errorf("Chromium loaded the page over %q, want h2", p)
	}
	if got := b.Eval(`new Promise((ok, fail) => { const ws = new WebSocket("wss://` + name + `/ws");
		ws.onopen = () => ws.send("hello from chromium"); ws.onmessage = e => { ok(e.data); ws.close(); };
		ws.onerror = () => fail("websocket error"); })`); got != "hello from chromium" {
		t.Errorf("Chromium's WebSocket echo: %q", got)
	}
	b.CheckNoErrors()
	nodeKey, err := pebbletest.StoredKey(filepath.Join(ncfg.DataDir, "certs"), name)
	if err != nil {
		t.Fatal(err)
	}
	if !pebbletest.SameKey(nodeKey, leaf.PeerCertificates[0].PublicKey) || !pebbletest.SameKey(nodeKey, wsState.PeerCertificates[0].PublicKey) {
		t.Fatal("the new visitor's certificate (HTTP/2 or WebSocket) does not hold the node's key")
	}
	if k := pebbletest.KeyFiles(filepath.Join(dir, "a", "certs"), name); len(k) != 1 || pebbletest.SameKey(nodeKey, gatewayLeaf.PublicKey) {
		t.Fatalf("the gateway's own key for %s (auto mode, before the node's): %v", name, k)
	}
	if st := status(t, tp, name, tp.SupernodeA); st.TLS != gateway.TLSAtNode {
		t.Fatalf("?status after the node's certificate: %+v", st)
	}
	// The first visitor's connection, terminated at the gateway, is
	// still up and still works.
	if body, cs := peer(first); !strings.HasSuffix(body, "tls=false") || !cs.PeerCertificates[0].Equal(gatewayLeaf) {
		t.Fatalf("the first visitor's connection after the switch: %q", body)
	}
}

// status is a name's ?status from the port 80 of gw's gateway (over
// HTTPS an end-to-end name's requests go to the node).
func status(t *testing.T, tp *nattest.Topology, name string, gw *nattest.Host) gateway.Status {
	t.Helper()
	c := tp.Client.HTTPClient()
	req, _ := http.NewRequest("GET", "http://"+gw.Addr().String()+"/?status", nil)
	req.Host = name
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("?status: %v", err)
	}
	defer resp.Body.Close()
	var st gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("?status: %s %v", resp.Status, err)
	}
	return st
}
