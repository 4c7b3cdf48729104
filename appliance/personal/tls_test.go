package personal

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/browsertest"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway"
)

// TestEndToEndTLS (issue 18): nodes get their own certificates from an
// ACME CA (Pebble) by TLS-ALPN-01 through gateway 1's splice, and
// visitors of https://<name>.pc2.test at gateway 1 reach them over
// HTTP/2 with TLS ending at the node, by each route: alice attached to
// gateway 1 (its relay), bob attached to gateway 2 only (forwarded), and
// carol reachable directly (found by gateway 2's dial-back). The
// certificate presented holds the key in the node's storage, the node
// sees the visitor's address (PROXY v2) and HTTPS, and the gateways,
// whose domain is end to end only, hold no key for the names. Alice is
// also reached over WebSocket, and her owner logs in through it.
func TestEndToEndTLS(t *testing.T) {
	httpsLn, pb, roots := pebbleFor(t, "pc2.test", "alice.pc2.test", "bob.pc2.test", "carol.pc2.test")
	_, op, _ := ed25519.GenerateKey(nil)
	gw1 := gwtest.Start(t, gwtest.Options{Operator: op, HTTPSListener: httpsLn, TLS: "end-to-end",
		ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}})
	gw2 := gwtest.Start(t, gwtest.Options{Operator: op, Bootstrap: gw1.Addrs, ServeOnly: true})
	gw2Peer := gw2.Addrs[0][strings.LastIndex(gw2.Addrs[0], "/")+1:]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A browser: every name resolves to gateway 1's port 443.
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	// The names API at the apex, over HTTPS with Pebble's certificate.
	names := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "pc2.test", RootCAs: roots}}}

	for _, c := range []struct {
		label, route string
		cfg          Config
	}{
		// Pinned: each route is the one under test (discovery would
		// attach bob to gateway 1 too, from its domain record).
		{"alice", "relay", Config{Mode: ModeRelayed, Supernodes: gw1.Addrs, PinSupernodes: true}},
		{"bob", "via " + gw2Peer, Config{Mode: ModeRelayed, Supernodes: gw2.Addrs, PinSupernodes: true}},
		{"carol", "direct", Config{Supernodes: gw2.Addrs, P2PListen: []string{"/ip4/127.0.0.1/tcp/0"}, PinSupernodes: true}},
	} {
		name := c.label + ".pc2.test"
		ncfg := c.cfg
		ncfg.KeyFile = filepath.Join(t.TempDir(), "node.key")
		ncfg.NameServices = []cloud.NameService{{Domain: "pc2.test", API: "https://" + httpsLn.Addr().String()}}
		ncfg.TLS = &TLSConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, &ncfg, Options{Listener: ln, Logger: testlog.New(t, 0), TLSCheck: 200 * time.Millisecond, Routes: echotest.Register,
				NamesClient: names})
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", c.label, err)
			}
		}()
		local := cloudtest.New(t, "http://"+ln.Addr().String(), nil)
		local.CreateIdentity()
		local.Password("owner password")
		if r := local.Claim(c.label, ""); r.Code != http.StatusSeeOther {
			t.Fatalf("%s: claim: %d %s", c.label, r.Code, r.Err())
		}
		var st Status
		testenv.WaitFor(t, 90*time.Second, c.label+"'s own certificate", func() bool {
			json.Unmarshal([]byte(local.Get("/api/status").Body), &st)
			return st.TLS != nil && st.TLS.Mode == TLSEndToEnd && (c.route != "direct" || st.Mode == "direct")
		})
		t.Logf("%s: %+v", c.label, *st.TLS)
		if r := local.Get("/_/"); !strings.Contains(r.Body, "end-to-end encrypted") {
			t.Errorf("%s: the dashboard does not say the traffic is end-to-end encrypted", c.label)
		}

		var resp *http.Response
		var body []byte
		// Polled as a browser's reloads would be, within the gateway's
		// request limit.
		testenv.WaitFor(t, 30*time.Second, name+" through gateway 1", func() bool {
			if resp, err = client.Get("https://" + name + "/peer"); err != nil {
				time.Sleep(100 * time.Millisecond)
				return false
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				time.Sleep(100 * time.Millisecond)
				return false
			}
			return true
		})
		if resp.Proto != "HTTP/2.0" || string(body) != "127.0.0.1 HTTP/2.0 tls=true" {
			t.Fatalf("%s through the splice: %s, the node saw %q; want HTTP/2 from 127.0.0.1 over TLS", name, resp.Proto, body)
		}
		nodeKey, err := pebbletest.StoredKey(filepath.Join(ncfg.CloudDir(), "certs"), name)
		if err != nil {
			t.Fatal(err)
		}
		if !pebbletest.SameKey(nodeKey, resp.TLS.PeerCertificates[0].PublicKey) {
			t.Fatalf("%s: the certificate presented is not the node's key", name)
		}
		for _, gw := range []*gwtest.Gateway{gw1, gw2} {
			if k := pebbletest.KeyFiles(filepath.Join(gw.DataDir, "certs"), name); len(k) > 0 {
				t.Fatalf("a gateway holds a key for %s: %v", name, k)
			}
		}
		// Gateway 1 says where the connection's TLS ended and how it
		// reached the node (?status on its port 80).
		var gs gateway.Status
		status := cloudtest.New(t, gw1.API, nil)
		status.Host = name
		if err := json.Unmarshal([]byte(status.Get("/?status").Body), &gs); err != nil || gs.TLS != gateway.TLSAtNode ||
			gs.TLSMode != "end-to-end" || gs.LastRoute != c.route {
			t.Fatalf("%s ?status: tls %q mode %q route %q, want the route %q (%v)", name, gs.TLS, gs.TLSMode, gs.LastRoute, c.route, err)
		}
		if c.label != "alice" {
			continue
		}

		// WebSocket over the splice (HTTP/1.1).
		wd := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots},
			NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
			}}
		ws, _, err := wd.Dial("wss://"+name+"/ws", nil)
		if err != nil {
			t.Fatalf("WebSocket: %v", err)
		}
		for _, m := range []string{"one", strings.Repeat("x", 100<<10)} {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
			if _, b, err := ws.ReadMessage(); err != nil || string(b) != m {
				t.Fatalf("WebSocket echo: %d bytes, %v", len(b), err)
			}
		}
		ws.Close()

		// Spliced connections over one address's share of alice's
		// streams wait in line, as requests do: the one past 64 gets its
		// handshake only once one ahead of it closes. The browser's
		// kept-alive connection would hold one of them.
		tr.CloseIdleConnections()
		time.Sleep(200 * time.Millisecond)
		spliceQueue(t, httpsLn.Addr().String(), name, roots)

		// The owner, away from home, over end-to-end TLS.
		owner := cloudtest.New(t, "https://"+name, client)
		owner.Login("owner password")
		if r := owner.Get("/_/"); r.Code != http.StatusOK || !strings.Contains(r.Body, name) {
			t.Fatalf("the owner's dashboard over end-to-end TLS: %d", r.Code)
		}

		// A real browser that trusts the node's key and nothing else
		// (another key: ERR_CERT_AUTHORITY_INVALID): the owner logs in,
		// the page came over HTTP/2, and a WebSocket echoes.
		b := browsertest.New(t, browsertest.Options{HostRules: []string{"MAP *.pc2.test 127.0.0.1"},
			TrustKeys: []string{browsertest.SPKIHash(resp.TLS.PeerCertificates[0])}})
		base := fmt.Sprintf("https://%s:%d", name, httpsLn.Addr().(*net.TCPAddr).Port)
		b.Navigate(base + "/_/login")
		b.Type("#password", "owner password")
		b.Click("#login")
		b.WaitVisible("#tls")
		if got := b.Text("#tls"); got != "end-to-end encrypted" {
			t.Errorf("the dashboard in Chromium says %q", got)
		}
		if p := b.Eval(`performance.getEntriesByType("navigation")[0].nextHopProtocol`); p != "h2" {
			t.Errorf("Chromium loaded the dashboard over %q, want h2", p)
		}
		b.Navigate(base + "/peer")
		if got := b.Text("body"); !strings.HasSuffix(got, "HTTP/2.0 tls=true") {
			t.Errorf("Chromium's request at the node: %q", got)
		}
		if got := b.Eval(`new Promise((ok, fail) => { const ws = new WebSocket("wss://` + strings.TrimPrefix(base, "https://") + `/ws");
			ws.onopen = () => ws.send("hello from chromium"); ws.onmessage = e => { ok(e.data); ws.close(); };
			ws.onerror = () => fail("websocket error"); })`); got != "hello from chromium" {
			t.Errorf("Chromium's WebSocket echo: %q", got)
		}
		b.CheckNoErrors()
	}
}

// spliceQueue holds gateway.DefaultStreamsPerClient spliced TLS
// connections to name at addr, checks that one more waits (no handshake)
// and that it gets its handshake from the node once one is closed, even
// after waiting longer than a dial may take.
func spliceQueue(t *testing.T, addr, name string, roots *x509.CertPool) {
	t.Helper()
	dial := func() (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	}
	var held []*tls.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range gateway.DefaultStreamsPerClient {
		c, err := dial()
		if err != nil {
			t.Fatalf("spliced connection %d of the share: %v", len(held)+1, err)
		}
		held = append(held, c)
	}
	got := make(chan error, 1)
	go func() {
		c, err := dial()
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	// Longer than the gateway's dial timeout (2 s): the dial's time
	// starts after the wait (once it did not, and the connection was
	// closed, or in "auto" mode terminated at the gateway).
	select {
	case err := <-got:
		t.Fatalf("a spliced connection past the share was not held in line: %v", err)
	case <-time.After(gateway.DefaultDialTimeout + 500*time.Millisecond):
	}
	held[0].Close()
	if err := <-got; err != nil {
		t.Fatalf("a spliced connection waiting in line: %v", err)
	}
}

// pebbleFor starts Pebble whose DNS sends hosts to 127.0.0.1, with its
// TLS-ALPN-01 challenges on the returned listener (a gateway's HTTPS),
// and returns the roots it issues under.
func pebbleFor(t *testing.T, hosts ...string) (net.Listener, *pebbletest.Server, *x509.CertPool) {
	t.Helper()
	httpsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := pebbletest.Start(t, pebbletest.Options{TLSPort: httpsLn.Addr().(*net.TCPAddr).Port})
	for _, h := range hosts {
		if err := pb.AddA(h, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	return httpsLn, pb, roots
}
