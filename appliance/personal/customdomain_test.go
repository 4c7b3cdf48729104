package personal

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/dnstest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway"
	"github.com/pc2/pc2/services/gateway/customdomain"
	"github.com/pc2/pc2/services/gateway/namesapi"
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

// TestCustomDomainInvite (issue 20): an operator whose gateways take
// own domains by invite. Alice's own domain is served by none of them
// until she registers it on her dashboard with a code, at the names API
// of her name's operator; then by both of the operator's gateways,
// including one that takes no registrations itself (it reads the
// shared tally). A used code, an unknown one and none are refused with
// the reason on the page; a host whose proof is another key's cannot
// be registered by anyone; the per-node share counts only hosts whose
// proof still names the node, so removing one's proof frees its slot;
// registering a listed host again needs no code (the renewal).
func TestCustomDomainInvite(t *testing.T) {
	zone := []string{"example.test"}
	dns := dnstest.Start(t, dnstest.Records{Zones: zone})
	_, op, _ := ed25519.GenerateKey(nil)
	codes := []string{"custom-code-0001", "custom-code-0002"}
	a := gwtest.Start(t, gwtest.Options{Operator: op,
		CustomDomains: &supernode.CustomDomainsConfig{Policy: "invite", Invites: codes, PerNode: 1, DNSServer: dns.Addr}})
	b := gwtest.Start(t, gwtest.Options{Operator: op, Bootstrap: a.Addrs,
		CustomDomains: &supernode.CustomDomainsConfig{Policy: "invite", DNSServer: dns.Addr}})
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: a.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: a.API}}}
	base := setUpNode(t, cfg, Options{}, "alice")
	owner := cloudtest.New(t, base, nil)
	owner.Login("owner password")
	key, err := identity.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	proof := func(host string) string {
		p, err := customdomain.Sign(key, host)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, mallory, _ := ed25519.GenerateKey(nil)
	forged, _ := customdomain.Sign(mallory, "forged.example.test")
	forged = strings.Replace(forged, "did="+didOf(mallory), "did="+didOf(key), 1)
	txt := map[string][]string{"_pc2.cloud.example.test": {proof("cloud.example.test")}, "_pc2.dev.example.test": {proof("dev.example.test")},
		"_pc2.forged.example.test": {forged}}
	dns.Set(dnstest.Records{Zones: zone, TXT: txt})

	visit := visitStatus
	if code, body := visit(b, "cloud.example.test"); code != http.StatusNotFound || !strings.Contains(body, "not registered") {
		t.Fatalf("an unregistered own domain: %d %s", code, body)
	}

	csrf := owner.CSRF("/_/domains")
	for _, d := range []string{"cloud.example.test", "dev.example.test"} {
		owner.Post("/_/domains", url.Values{"csrf": {csrf}, "domain": {d}})
	}
	register := func(host, invite string) string {
		r := owner.Post("/_/domains/register", url.Values{"csrf": {csrf}, "domain": {host}, "invite": {invite}})
		if r.Code != http.StatusSeeOther {
			t.Fatalf("register %s: %d %s", host, r.Code, r.Body)
		}
		u, _ := url.Parse(r.Location())
		return u.Query().Get("msg") + u.Query().Get("err")
	}
	for invite, want := range map[string]string{"": "need an invite code", "not-a-code-at-all": "unknown invite code"} {
		if got := register("cloud.example.test", invite); !strings.Contains(got, want) {
			t.Errorf("register with %q: %q, want %q", invite, got, want)
		}
	}
	if got := register("cloud.example.test", codes[0]); !strings.Contains(got, "registered cloud.example.test") {
		t.Fatalf("register with a code: %q", got)
	}
	if page := owner.Get("/_/domains").Body; !strings.Contains(page, "Registered with your name's operator until") {
		t.Error("the page does not show the registration")
	}
	for _, g := range []*gwtest.Gateway{a, b} {
		testenv.WaitFor(t, 45*time.Second, "cloud.example.test through "+g.API, func() bool {
			code, body := visit(g, "cloud.example.test")
			return code == http.StatusOK && strings.Contains(body, didOf(key))
		})
	}
	if got := register("dev.example.test", codes[0]); !strings.Contains(got, "already used") {
		t.Errorf("a used code: %q", got)
	}
	if got := register("dev.example.test", codes[1]); !strings.Contains(got, "the most one node may") {
		t.Errorf("over the per-node share: %q", got)
	}

	// Anyone may send a registration (the proof says whose host it is),
	// but not for a host whose proof another key signed.
	api := &namesapi.Client{API: a.API}
	if _, err := api.RegisterHost(context.Background(), "pc2.test", "forged.example.test", codes[1]); err == nil || !strings.Contains(err.Error(), "no valid proof") {
		t.Errorf("a forged proof: %v", err)
	}
	// A supernode without codes takes no registrations.
	if _, err := (&namesapi.Client{API: b.API}).RegisterHost(context.Background(), "pc2.test", "dev.example.test", codes[1]); err == nil || !strings.Contains(err.Error(), "no such API call") {
		t.Errorf("a registration at the supernode without codes: %v", err)
	}
	// Registering a listed host again is its renewal: no code needed.
	if hi, err := api.RegisterHost(context.Background(), "pc2.test", "cloud.example.test", ""); err != nil || hi.DID != didOf(key) {
		t.Errorf("registered again without a code: %+v %v", hi, err)
	}
	// cloud's proof removed: it stops, and its slot is free for dev.
	delete(txt, "_pc2.cloud.example.test")
	dns.Set(dnstest.Records{Zones: zone, TXT: txt})
	if got := register("dev.example.test", codes[1]); !strings.Contains(got, "registered dev.example.test") {
		t.Fatalf("register dev once cloud's proof is gone: %q", got)
	}
	testenv.WaitFor(t, 45*time.Second, "dev.example.test through the gateway that takes no registrations", func() bool {
		code, _ := visit(b, "dev.example.test")
		return code == http.StatusOK
	})
	testenv.WaitFor(t, 45*time.Second, "cloud.example.test to stop without its proof", func() bool {
		code, _ := visit(b, "cloud.example.test")
		return code == http.StatusNotFound
	})
}

// TestCustomDomainEndToEnd (issue 20): a node with TLS of its own gets
// a certificate for its owner's own domain too, once the domain's proof
// names it: the gateway splices the CA's validation and then visitors'
// TLS for the host to the node, and holds no key for it.
func TestCustomDomainEndToEnd(t *testing.T) {
	const host = "cloud.example.test"
	httpsLn, pb, roots := pebbleFor(t, "pc2.test", "alice.pc2.test", host)
	zone := []string{"example.test"}
	dns := dnstest.Start(t, dnstest.Records{Zones: zone})
	_, op, _ := ed25519.GenerateKey(nil)
	gw := gwtest.Start(t, gwtest.Options{Operator: op, HTTPSListener: httpsLn,
		ACME:          supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)},
		CustomDomains: &supernode.CustomDomainsConfig{Policy: "open", DNSServer: dns.Addr}})
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs, PinSupernodes: true,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: "https://" + httpsLn.Addr().String()}},
		TLS:          &TLSConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}}
	names := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "pc2.test", RootCAs: roots}}}
	base := setUpNode(t, cfg, Options{NamesClient: names, TLSCheck: 200 * time.Millisecond, LookupTXT: gateway.LookupTXTWith(dns.Addr)}, "alice")
	owner := cloudtest.New(t, base, nil)
	owner.Login("owner password")
	owner.Post("/_/domains", url.Values{"csrf": {owner.CSRF("/_/domains")}, "domain": {host}})
	key, err := identity.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := customdomain.Sign(key, host)
	if err != nil {
		t.Fatal(err)
	}
	dns.Set(dnstest.Records{Zones: zone, TXT: map[string][]string{"_pc2." + host: {proof}}})

	var st Status
	testenv.WaitFor(t, 90*time.Second, "the node's own certificate for "+host, func() bool {
		json.Unmarshal([]byte(owner.Get("/api/status").Body), &st)
		return st.TLS != nil && st.TLS.Domains[host].Held
	})
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}}
	var resp *http.Response
	testenv.WaitFor(t, 30*time.Second, "https://"+host+" to reach the node end to end", func() bool {
		time.Sleep(100 * time.Millisecond) // one client: within its rate
		if resp, err = client.Get("https://" + host + "/api/status"); err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && resp.TLS.PeerCertificates[0].NotAfter.Equal(st.TLS.Domains[host].NotAfter)
	})
	nodeKey, err := pebbletest.StoredKey(filepath.Join(cfg.CloudDir(), "certs"), host)
	if err != nil {
		t.Fatal(err)
	}
	if !pebbletest.SameKey(nodeKey, resp.TLS.PeerCertificates[0].PublicKey) {
		t.Fatalf("the certificate presented for %s is not the node's key", host)
	}
	if k := pebbletest.KeyFiles(filepath.Join(gw.DataDir, "certs"), host); len(k) > 0 {
		t.Fatalf("the gateway holds a key for %s: %v", host, k)
	}
}
