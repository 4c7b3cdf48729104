package qemutests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestEndToEndTLSAppliance (issue 18): the personal image, set up in its
// wizard, gets its own certificate for its name from the test's ACME CA
// (Pebble on the host, named in the settings' tls), through the host
// gateway's splice (TLS-ALPN-01), and a browser on the host reaches
// https://bob.pc2.test over HTTP/2 with TLS ending in the VM: the gateway
// holds no key for the name, the node says "end-to-end", and so does the
// gateway's ?status. The VM attaches to the gateway's supernode; its
// wizard claims the name at a second supernode of the operator's over
// plain HTTP (the VM does not trust Pebble's roots for the names API).
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
	for _, n := range []string{testDomain, name} {
		if err := pb.AddA(n, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	gw := gwtest.Start(t, gwtest.Options{Domain: testDomain, Operator: testOperator, HTTPListener: httpLn, HTTPSListener: httpsLn,
		ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}})
	names := gwtest.Start(t, gwtest.Options{Domain: testDomain, Operator: testOperator, Bootstrap: gw.Addrs})
	guestAddr := strings.Replace(gw.Addrs[0], "/ip4/127.0.0.1/", "/ip4/10.0.2.2/", 1)
	s := settings.Settings{Profile: profile.Personal, Supernodes: []string{guestAddr},
		NameServices: []settings.NameService{{Domain: testDomain, API: fmt.Sprintf("http://10.0.2.2:%d", names.HTTPPort)}},
		TLS: &settings.NodeTLS{ACMECA: strings.Replace(pb.DirectoryURL, "127.0.0.1", "10.0.2.2", 1), ACMECARoot: string(pb.ClientRootsPEM),
			ACMEEmail: "bob@" + testDomain}}
	img := qemutest.CopyImage(t, buildProfileImage(t, s, nil))
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	waitStatus(t, vm, 3*time.Minute, "in the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	owner := cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), &http.Client{Timeout: time.Minute})
	owner.CreateIdentity()
	owner.Password("owner password")
	// The two supernodes list themselves in the domain's record at
	// start: until each knows the other, a claim handed to the primary
	// may be refused for a moment.
	claim := owner.Claim("bob", "")
	for end := time.Now().Add(time.Minute); claim.Code != http.StatusSeeOther && strings.Contains(claim.Err(), "primary") && time.Now().Before(end); {
		time.Sleep(time.Second)
		claim = owner.Claim("bob", "")
	}
	if claim.Code != http.StatusSeeOther {
		t.Fatalf("claim in the wizard: %d %s", claim.Code, claim.Err())
	}
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
