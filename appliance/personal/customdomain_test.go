package personal

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/dnstest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway/customdomain"
)

// TestCustomDomain (issue 20): alice's node holds alice.pc2.test; her
// own domain cloud.example.test has, in a real DNS server (dnsmasq), the
// TXT proof her node's key signed. The gateway serves it to her node,
// over HTTP and over HTTPS with a certificate from Pebble got on demand;
// a proof for another domain's name signed by another key is refused;
// once the proof is removed the domain stops within the gateway's cache.
func TestCustomDomain(t *testing.T) {
	httpsLn, pb, roots := pebbleFor(t, "pc2.test", "cloud.example.test")
	zone := []string{"example.test"}
	dns := dnstest.Start(t, dnstest.Records{Zones: zone})
	_, op, _ := ed25519.GenerateKey(nil)
	gw := gwtest.Start(t, gwtest.Options{Operator: op, HTTPSListener: httpsLn, TLS: "gateway",
		ACME:          supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)},
		CustomDomains: &supernode.CustomDomainsConfig{Policy: "open", DNSServer: dns.Addr}})
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: "https://" + httpsLn.Addr().String()}}}
	names := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "pc2.test", RootCAs: roots}}}
	setUpNode(t, cfg, Options{NamesClient: names}, "alice")
	key, err := identity.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	aliceID, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	proof, err := customdomain.Sign(key, "cloud.example.test")
	if err != nil {
		t.Fatal(err)
	}
	_, mallory, _ := ed25519.GenerateKey(nil)
	forged, _ := customdomain.Sign(mallory, "forged.example.test")
	forged = strings.Replace(forged, "did="+didOf(mallory), "did="+aliceID.DID(), 1)
	dns.Set(dnstest.Records{Zones: zone, TXT: map[string][]string{
		"_pc2.cloud.example.test":  {"v=spf1 -all", proof},
		"_pc2.forged.example.test": {forged},
	}})

	// Over HTTPS (port 80 redirects there), with a certificate for the
	// owner's domain.
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}}
	visit := func(host string) (int, string) {
		time.Sleep(100 * time.Millisecond) // one client: within its rate
		req, _ := http.NewRequest("GET", "https://"+host+"/api/status", nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var body string
	testenv.WaitFor(t, 90*time.Second, "https://cloud.example.test/ to reach alice's node", func() bool {
		resp, err := client.Get("https://cloud.example.test/api/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(body, aliceID.DID()) {
		t.Fatalf("cloud.example.test answered %s, want alice's node", body)
	}
	// A proof in alice's name signed by another key: no certificate
	// (the handshake fails), and port 80's ?status says why.
	if _, err := client.Get("https://forged.example.test/"); err == nil {
		t.Fatal("forged.example.test got a certificate")
	}
	req, _ := http.NewRequest("GET", gw.API+"/?status", nil)
	req.Host = "forged.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "no such name") {
		t.Fatalf("a proof signed by another key: %d %s", resp.StatusCode, b)
	}
	// The proof removed: within the gateway's cache the domain stops.
	dns.Set(dnstest.Records{Zones: zone})
	testenv.WaitFor(t, 45*time.Second, "cloud.example.test to stop once its proof is gone", func() bool {
		code, _ := visit("cloud.example.test")
		return code == http.StatusNotFound
	})
}

func didOf(k ed25519.PrivateKey) string {
	id, _ := identity.IDFromPublicKey(k.Public().(ed25519.PublicKey))
	return id.DID()
}
