package personal

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/echotest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway"
)

// TestEndToEndTLS (issue 18): a node behind its relay gets its own
// certificate from an ACME CA (Pebble) by TLS-ALPN-01 through the
// gateway's splice, and visitors of https://alice.pc2.test reach it over
// HTTP/2 and WebSocket with TLS ending at the node: the certificate
// presented holds the key in the node's storage, the node sees the
// visitor's address (PROXY v2) and HTTPS, and the gateway, whose domain
// is end to end only, holds no key for alice's name. The owner logs in
// through it.
func TestEndToEndTLS(t *testing.T) {
	httpsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pb := pebbletest.Start(t, pebbletest.Options{TLSPort: httpsLn.Addr().(*net.TCPAddr).Port})
	for _, h := range []string{"alice.pc2.test", "pc2.test"} {
		if err := pb.AddA(h, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	gw := gwtest.Start(t, gwtest.Options{HTTPSListener: httpsLn, TLS: "end-to-end",
		ACME: supernode.ACMEConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir := t.TempDir()
	ncfg := &Config{KeyFile: filepath.Join(dir, "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: "https://" + httpsLn.Addr().String()}},
		TLS:          &TLSConfig{CA: pb.DirectoryURL, CARoot: string(pb.ClientRootsPEM)}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// The names API at the apex, over HTTPS with Pebble's certificate.
		names := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "pc2.test", RootCAs: roots}}}
		done <- Run(ctx, ncfg, Options{Listener: ln, Logger: testlog.New(t, 0), TLSCheck: 200 * time.Millisecond, Routes: echotest.Register,
			NamesClient: names})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	local := cloudtest.New(t, "http://"+ln.Addr().String(), nil)
	local.CreateIdentity()
	local.Password("owner password")
	if r := local.Claim("alice", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim: %d %s", r.Code, r.Err())
	}
	var st Status
	testenv.WaitFor(t, 90*time.Second, "the node's own certificate", func() bool {
		json.Unmarshal([]byte(local.Get("/api/status").Body), &st)
		return st.TLS != nil && st.TLS.Mode == TLSEndToEnd
	})
	t.Logf("node TLS: %+v", *st.TLS)
	if r := local.Get("/_/"); !strings.Contains(r.Body, "end-to-end encrypted") {
		t.Error("the dashboard does not say the traffic is end-to-end encrypted")
	}

	// A browser: every name resolves to the gateway's port 443.
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	resp, err := client.Get("https://alice.pc2.test/peer")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || string(body) != "127.0.0.1 HTTP/2.0 tls=true" {
		t.Fatalf("through the splice: %s, the node saw %q; want HTTP/2 from 127.0.0.1 over TLS", resp.Proto, body)
	}
	nodeKey := storedKey(t, filepath.Join(ncfg.CloudDir(), "certs"), "alice.pc2.test")
	leaf := resp.TLS.PeerCertificates[0]
	if !nodeKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("the certificate presented is not the node's key")
	}
	if k := findKeys(t, filepath.Join(gw.DataDir, "certs"), "alice.pc2.test"); len(k) > 0 {
		t.Fatalf("the gateway holds a key for alice's name: %v", k)
	}

	// WebSocket over the splice (HTTP/1.1).
	wd := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots},
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsLn.Addr().String())
		}}
	ws, _, err := wd.Dial("wss://alice.pc2.test/ws", nil)
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

	// The owner, away from home, over end-to-end TLS.
	owner := cloudtest.New(t, "https://alice.pc2.test", client)
	owner.Login("owner password")
	if r := owner.Get("/_/"); r.Code != http.StatusOK || !strings.Contains(r.Body, "alice.pc2.test") {
		t.Fatalf("the owner's dashboard over end-to-end TLS: %d", r.Code)
	}

	// The gateway says where the last connection's TLS ended.
	var gs gateway.Status
	status := cloudtest.New(t, gw.API, nil)
	status.Host = "alice.pc2.test"
	if err := json.Unmarshal([]byte(status.Get("/?status").Body), &gs); err != nil || gs.TLS != gateway.TLSAtNode || gs.TLSMode != "end-to-end" {
		t.Fatalf("?status: tls %q mode %q (%v)", gs.TLS, gs.TLSMode, err)
	}
}

// findKeys are the private key files for name under dir (certmagic's
// storage).
func findKeys(t *testing.T, dir, name string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name+".key" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// storedKey is the public half of the one private key for name under
// dir.
func storedKey(t *testing.T, dir, name string) crypto.PublicKey {
	t.Helper()
	files := findKeys(t, dir, name)
	if len(files) != 1 {
		t.Fatalf("keys for %s under %s: %v", name, dir, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s is not PEM", files[0])
	}
	var key crypto.Signer
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		key = k.(crypto.Signer)
	} else if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		key = k
	} else {
		t.Fatalf("%s: %v", files[0], err)
	}
	return key.Public()
}
