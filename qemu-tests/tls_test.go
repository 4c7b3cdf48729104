package qemutests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/dnstest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/qemu-tests/qemutest"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/gateway/customdomain"
)

// TestEndToEndTLSAppliance (issue 18): the personal image, set up in its
// wizard, gets its own certificate for its name from the test's ACME CA
// (Pebble on the host, named in the settings' tls), through the host
// gateway's splice (TLS-ALPN-01), and a browser on the host reaches
// https://bob.pc2.test over HTTP/2 with TLS ending in the VM: the gateway
// holds no key for the name, the node says "end-to-end", and so does the
// gateway's ?status. The VM's settings name no supernode, only the name
// service of a second supernode of the operator's (issue 20): the VM
// starts from its /api/supernodes, learns both supernodes and attaches
// to both; its wizard claims the name there over plain HTTP (the VM
// does not trust Pebble's roots for the names API). Then the owner adds
// her own domain on the appliance's dashboard, puts the proof it shows
// into a DNS server on the host (dnsmasq), and the gateway serves the
// domain to the appliance over HTTPS.
func TestEndToEndTLSAppliance(t *testing.T) {
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The VM reaches Pebble at the host's 10.0.2.2.
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpLn.Addr().(*net.TCPAddr).Port, TLSPort: httpsLn.Addr().(*net.TCPAddr).Port,
		CertIPs: []string{"10.0.2.2"}})
	name := "bob." + testDomain
	// The owner's own domain, its proof in a DNS server on the host.
	const own = "cloud.example.test"
	zone := []string{"example.test"}
	dns := dnstest.Start(t, dnstest.Records{Zones: zone})
	for _, n := range []string{testDomain, name, own} {
		if err := pb.AddA(n, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	listen, announce := guestReachable(t)
	gw := gwtest.Start(t, gwtest.Options{Domain: testDomain, Operator: testOperator, HTTPListener: httpLn, HTTPSListener: httpsLn,
		ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}, Listen: listen, Announce: announce,
		CustomDomains: &supernode.CustomDomainsConfig{Policy: "open", DNSServer: dns.Addr}})
	listen, announce = guestReachable(t)
	names := gwtest.Start(t, gwtest.Options{Domain: testDomain, Operator: testOperator, Bootstrap: gw.Addrs, Listen: listen, Announce: announce})
	// No supernode in the settings: the name service's gateway is the
	// entry point (GET /api/supernodes), the domain record the rest.
	s := settings.Settings{Profile: profile.Personal,
		NameServices: []settings.NameService{{Domain: testDomain, API: fmt.Sprintf("http://10.0.2.2:%d", names.HTTPPort)}},
		TLS: &settings.NodeTLS{ACMECA: strings.Replace(pb.DirectoryURL, "127.0.0.1", "10.0.2.2", 1), ACMECARoot: string(pb.ClientRootsPEM),
			ACMEEmail: "bob@" + testDomain}}
	img := qemutest.CopyImage(t, buildProfileImage(t, s, nil))
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	waitStatus(t, vm, 3*time.Minute, "in the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	owner := cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), &http.Client{Timeout: time.Minute})
	owner.CreateIdentity()
	owner.Password("owner password")
	if claim := owner.Claim("bob", ""); claim.Code != http.StatusSeeOther {
		t.Fatalf("claim in the wizard: %d %s", claim.Code, claim.Err())
	}
	// Discovery: both supernodes known and attached to.
	ids := map[string]bool{}
	for _, g := range []*gwtest.Gateway{gw, names} {
		ais, err := dht.ParseAddrInfos(g.Addrs)
		if err != nil {
			t.Fatal(err)
		}
		ids[ais[0].ID.String()] = true
	}
	waitStatus(t, vm, 3*time.Minute, "attached to both supernodes", func(st personal.Status) bool {
		if st.Tunnel == nil {
			return false
		}
		n := 0
		for _, l := range st.Tunnel.Supernodes {
			if l.Attached && ids[l.ID] {
				n++
			}
		}
		return n == 2
	})
	st := waitStatus(t, vm, 3*time.Minute, "end to end", func(st personal.Status) bool { return st.TLS != nil && st.TLS.Mode == personal.TLSEndToEnd })
	t.Logf("the appliance: %s", st.TLS.Why)

	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Timeout: time.Minute, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}}
	var resp *http.Response
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		if resp, err = browser.Get("https://" + name + "/"); err == nil && resp.TLS != nil && resp.StatusCode < 500 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("https://%s: %v", name, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("https://%s over %s, want HTTP/2", name, resp.Proto)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if k := pebbletest.KeyFiles(filepath.Join(gw.DataDir, "certs"), name); len(k) > 0 {
		t.Fatalf("the gateway holds a key for %s: %v", name, k)
	}
	if !strings.Contains(st.TLS.Why, leaf.Issuer.CommonName) || !leaf.NotAfter.Equal(st.TLS.Certificate.NotAfter) {
		t.Fatalf("the certificate presented (%s, until %v) is not the one the appliance holds (%+v)", leaf.Issuer.CommonName, leaf.NotAfter, st.TLS.Certificate)
	}
	// The owner adds her own domain on the appliance's dashboard and
	// puts the proof it shows into her DNS: the gateway serves the
	// domain to the appliance.
	owner.Post("/_/domains", url.Values{"csrf": {owner.CSRF("/_/domains")}, "domain": {own}})
	m := regexp.MustCompile(`<code class="dns-TXT">([^<]+)</code>`).FindStringSubmatch(owner.Get("/_/domains").Body)
	if m == nil {
		t.Fatal("the appliance's own-domains page shows no proof")
	}
	dns.Set(dnstest.Records{Zones: zone, TXT: map[string][]string{customdomain.TXTName(own): {m[1]}}})
	var body []byte
	for end := time.Now().Add(45 * time.Second); ; time.Sleep(time.Second) {
		if resp, err = browser.Get("https://" + own + "/api/status"); err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), st.DID) {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatalf("https://%s did not reach the appliance: %v %s", own, err, body)
		}
	}

	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/?status", gw.HTTPPort), nil)
	req.Host = name
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	if !strings.Contains(string(b), `"tls": "end-to-end"`) {
		t.Fatalf("the gateway's ?status: %s", b)
	}
}
