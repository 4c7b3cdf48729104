package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/gateway"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

const testDomain = "pc2.test"

// keyFile writes a new key to dir/name and returns its path and IDs.
func keyFile(t testing.TB, dir, name string) (string, identity.ID, string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	path := filepath.Join(dir, name)
	if err := identity.WriteKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	pid, _ := dht.IDToPeer(id)
	return path, id, pid.String()
}

// userClient is the user's browser on the client host: every name it
// asks for resolves to gateway (as wildcard DNS pointing at it would),
// and it trusts the CA's roots.
func userClient(h *nattest.Host, gateway string, roots *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return h.Dial(ctx, network, net.JoinHostPort(gateway, port))
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 5 * time.Minute}
}

// TestGatewayNAT: alice's node sits behind NAT attached to supernode B
// (A is its failover); she claims alice.pc2.test on gateway A, whose
// supernode holds the operator key. The user's client, with the name
// resolving to A, reaches her through A -> B -> node: GET, a 100 MB POST
// checked end to end, a WebSocket, all over HTTPS with a certificate
// gateway A got on demand from a Pebble CA on the public segment. B
// dies: the same URL works again through A.
func TestGatewayNAT(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	opFile, opID, _ := keyFile(t, dir, "operator.key")
	aKey, _, aPeer := keyFile(t, dir, "a.key")
	bKey, _, bPeer := keyFile(t, dir, "b.key")
	nodeKey, nodeID, _ := keyFile(t, dir, "alice.key")
	aAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), aPeer)
	bAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeB.Addr(), bPeer)
	domains := []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}}
	// The CA on the public segment (on the user's client host): its
	// DNS sends every name to gateway A.
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: 80, TLSPort: 443, Host: tp.Client.Addr().String(),
		Command: func(name string, args ...string) *exec.Cmd {
			return tp.Client.Command(context.Background(), name, args...)
		},
		Dial: tp.Client.Dial})
	for _, n := range []string{testDomain, "alice." + testDomain} {
		if err := pb.AddA(n, tp.SupernodeA.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	acme := supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}
	snConfig := func(key, peerAddr, name string) *supernode.Config {
		return &supernode.Config{KeyFile: key, DataDir: filepath.Join(dir, name), Listen: []string{"/ip4/0.0.0.0/tcp/8090"},
			Bootstrap: []string{peerAddr}, Domains: domains, AllowPrivateDials: true, // the scenario's networks are private
			Gateway: &supernode.GatewayConfig{HTTPListen: ":80", HTTPSListen: ":443", ACME: acme}}
	}
	cfgA := snConfig(aKey, bAddr, "a")
	cfgA.Gateway.OperatorKeys = map[string]string{testDomain: opFile}
	start(t, tp.SupernodeA, "supernode", "supernode-a", cfgA)
	procB := start(t, tp.SupernodeB, "supernode", "supernode-b", snConfig(bKey, aAddr, "b"))
	start(t, tp.Node1, "node", "alice", &personal.Config{KeyFile: nodeKey, Supernodes: []string{bAddr, aAddr}, MaxAttached: 1, PinSupernodes: true,
		P2PListen: []string{"/ip4/0.0.0.0/tcp/8090"}})

	name := "alice." + testDomain
	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	user := userClient(tp.Client, tp.SupernodeA.Addr().String(), roots)
	api := &namesapi.Client{HTTP: user} // https://pc2.test
	ctx := context.Background()
	key, err := identity.LoadKeyFile(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	if ni, err := api.Claim(ctx, key, name, ""); err != nil || ni.DID != nodeID.DID() {
		t.Fatalf("claim: %+v %v", ni, err)
	}
	base := "https://" + name
	waitOK(t, user, base+"/hello", 30*time.Second)
	// Plain HTTP redirects to HTTPS.
	noFollow := *user
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, err := noFollow.Get("http://" + name + "/hello?x=1"); err != nil || resp.StatusCode != http.StatusPermanentRedirect ||
		resp.Header.Get("Location") != base+"/hello?x=1" {
		t.Fatalf("http://%s: %v %+v", name, err, resp)
	}
	if st := routing(t, user, base); !strings.HasPrefix(st.LastRoute, "via "+bPeer) {
		t.Fatalf("alice reached by %q, want via B (%s); A is %s; status %+v", st.LastRoute, bPeer, aPeer, st)
	}
	code, body := fetch(t, user, "GET", base+"/hello", nil)
	if code != 200 || !strings.Contains(body, "hello "+name) || !strings.Contains(body, "xff="+tp.Client.Addr().String()) ||
		!strings.Contains(body, "xfp=https") {
		t.Fatalf("GET: %d %q", code, body)
	}

	const size = 100 << 20
	h := sha256.New()
	start := time.Now()
	code, body = fetch(t, user, "POST", base+"/sum", io.TeeReader(io.LimitReader(rand.Reader, size), h))
	if want := fmt.Sprintf("%d %x", size, h.Sum(nil)); code != 200 || body != want {
		t.Fatalf("100 MB POST: %d %q, want %q", code, body, want)
	}
	t.Logf("100 MB POST through A -> B -> alice in %v", time.Since(start).Round(time.Millisecond))

	tr := user.Transport.(*http.Transport)
	wsTLS := tr.TLSClientConfig.Clone()
	wsTLS.NextProtos = []string{"http/1.1"} // WebSocket upgrades are HTTP/1.1
	d := websocket.Dialer{NetDialContext: tr.DialContext, TLSClientConfig: wsTLS}
	ws, _, err := d.Dial("wss://"+name+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("hello alice"))
	if _, m, err := ws.ReadMessage(); err != nil || string(m) != "hello alice" {
		t.Fatalf("websocket echo: %q %v", m, err)
	}
	ws.Close()

	// B dies: alice attaches to A, and A finds her there.
	procB.Kill()
	took := waitOK(t, user, base+"/hello", 15*time.Second)
	t.Logf("%s reachable through A %v after B died (target 5 s)", name, took.Round(time.Millisecond))
	if st := routing(t, user, base); st.LastRoute != "relay" {
		t.Fatalf("after B died alice is reached by %q, want A's relay", st.LastRoute)
	}
}

// fetch does one request and returns the status and body.
func fetch(t testing.TB, c *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitOK polls url until it answers 200 and returns how long that took.
func waitOK(t testing.TB, c *http.Client, url string, limit time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := c.Do(req)
		code, body := 0, ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
		}
		cancel()
		if code == 200 {
			return time.Since(begin)
		}
		if time.Since(begin) > limit {
			t.Fatalf("%s not answering within %v: %d %.200q %v", url, limit, code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routing is a name's ?status.
func routing(t testing.TB, c *http.Client, base string) gateway.Status {
	t.Helper()
	code, body := fetch(t, c, "GET", base+"/?status", nil)
	var st gateway.Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("?status: %d %s", code, body)
	}
	return st
}
