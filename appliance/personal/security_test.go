package personal

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/relay"
)

// fromAddr is an HTTP client whose connections come from the loopback
// address ip (127.0.0.0/8 is all local on Linux): a stranger with an
// address of its own.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestForgedClientAddresses (issue 16, finding 1): a stranger with a fresh
// libp2p key can no longer hand the node raw HTTP with an
// X-Forwarded-For of its choosing, neither through the supernode
// (/pc2/forward/1: it is not a gateway of the domain) nor directly
// (/pc2/http/1 to the node's own libp2p port). Through the gateway, the
// node counts the address the gateway saw, whatever the request claims.
// Strangers guessing from many addresses empty the global bucket and are
// refused, while the owner still logs in with the right password on the
// local network, WebDAV included.
func TestForgedClientAddresses(t *testing.T) {
	gw := gwtest.Start(t, gwtest.Options{})
	p2pPort := proc.FreePort(t)
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Supernodes: gw.Addrs,
		P2PListen:    []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p2pPort)},
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: gw.API}}}
	base := setUpNode(t, cfg, Options{}, "guarded")
	ctx := context.Background()
	key, err := identity.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	did, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	nodePeer, _ := dht.IDToPeer(did)
	visitor := cloudtest.New(t, gw.API, nil)
	visitor.Host = "guarded.pc2.test"
	testenv.WaitFor(t, 30*time.Second, "the friendly URL", func() bool { return visitor.Get("/").Code != http.StatusBadGateway })

	// The stranger: a fresh key.
	h, err := libp2p.New(libp2p.ListenAddrStrings())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	sn, err := peer.AddrInfoFromString(gw.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	if c, err := relay.Forward(fctx, h, *sn, did, relay.ProtocolHTTP); err == nil || !strings.Contains(err.Error(), "not a gateway") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a stranger's /pc2/forward/1 to the node: got %v, want refused as not a gateway", err)
	}
	direct, _ := ma.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p2pPort))
	if err := h.Connect(fctx, peer.AddrInfo{ID: nodePeer, Addrs: []ma.Multiaddr{direct}}); err != nil {
		t.Fatalf("connect to the node's libp2p port: %v", err)
	}
	if st, err := h.NewStream(fctx, nodePeer, relay.ProtocolHTTP); err == nil {
		fmt.Fprintf(st, "POST /_/login HTTP/1.1\r\nHost: guarded.pc2.test\r\nX-Forwarded-For: 198.51.100.1\r\nContent-Length: 0\r\n\r\n")
		b, rerr := io.ReadAll(st)
		if rerr == nil || len(b) > 0 {
			t.Fatalf("a stranger's direct /pc2/http/1 stream was served: %q %v", b, rerr)
		}
	}

	// Through the gateway, a forged X-Forwarded-For does not make a new
	// client: the stranger at 127.0.0.2 is limited after its burst.
	guess := func(from, xff string) int {
		t.Helper()
		b := cloudtest.New(t, gw.API, fromAddr(from))
		b.Host = "guarded.pc2.test"
		req, _ := http.NewRequest("POST", "/_/login", strings.NewReader(url.Values{"password": {"guess"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		return b.Do(req).Code
	}
	for i := range password.AttemptsPerClientBurst {
		if code := guess("127.0.0.2", fmt.Sprintf("198.51.100.%d", i)); code == http.StatusTooManyRequests {
			t.Fatalf("guess %d refused within the burst", i)
		}
	}
	if code := guess("127.0.0.2", "198.51.100.77"); code != http.StatusTooManyRequests {
		t.Fatalf("a guess past the burst with a forged X-Forwarded-For: got %d, want 429", code)
	}

	// Strangers from many addresses empty the global bucket...
	for i := 3; i < 3+password.AttemptsGlobalBurst; i++ {
		guess(fmt.Sprintf("127.0.0.%d", i), "")
	}
	if code := guess("127.0.0.200", ""); code != http.StatusTooManyRequests {
		t.Fatalf("a new stranger once the global bucket is empty: got %d, want 429", code)
	}
	// ...and the owner at home still gets in, by form and by WebDAV.
	home := cloudtest.New(t, base, nil)
	home.Login("owner password")
	req, _ := http.NewRequest("PROPFIND", base+"/dav/", nil)
	req.Header.Set("Depth", "0")
	req.SetBasicAuth("owner", "owner password")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMultiStatus {
		t.Fatalf("WebDAV with the right password during the attack: %s", resp.Status)
	}
}

// TestNameRenewed (issue 16, finding 8; issue 20): a grant routes
// visitors for a short time, so that a released or revoked name's old
// grant is not honoured for long, and the node renews its own name by
// itself when half of that time is left, never earlier; the name stays
// reserved for much longer. When the operator revokes the name, the node
// forgets it and its dashboard says why.
func TestNameRenewed(t *testing.T) {
	op := testOperatorKey(t)
	gw := gwtest.Start(t, gwtest.Options{Operator: op, GrantTTL: time.Hour, RouteTTL: 6 * time.Second})
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs,
		NameServices: []cloud.NameService{{Domain: "pc2.test", API: gw.API}}}
	base := setUpNode(t, cfg, Options{NameCheck: 200 * time.Millisecond}, "renewing")
	ctx := context.Background()
	names := &namesapi.Client{API: gw.API}
	first, err := names.Lookup(ctx, "renewing.pc2.test")
	if err != nil {
		t.Fatal(err)
	}
	if route, life := first.RouteUntil.Sub(first.IssuedAt), first.Expires.Sub(first.IssuedAt); route != 6*time.Second || life != time.Hour {
		t.Fatalf("grant routes for %v and lasts %v, want the configured 6s and 1h", route, life)
	}
	// Not renewed while more than half is left (checks every 200 ms)...
	time.Sleep(time.Until(first.IssuedAt.Add(2 * time.Second)))
	if ni, err := names.Lookup(ctx, "renewing.pc2.test"); err != nil || ni.Seq != first.Seq {
		t.Fatalf("renewed before half its life: %+v %v", ni, err)
	}
	// ...renewed after, and again after that: the name never lapses.
	seqs := map[uint64]bool{first.Seq: true}
	testenv.WaitFor(t, 20*time.Second, "two renewals", func() bool {
		ni, err := names.Lookup(ctx, "renewing.pc2.test")
		if err != nil || ni.Status != records.StatusActive || !ni.RouteUntil.After(time.Now()) || !ni.Since.Equal(first.Since) {
			t.Fatalf("the name lapsed or changed holding: %+v %v", ni, err)
		}
		seqs[ni.Seq] = true
		return len(seqs) >= 3
	})

	// The operator revokes it (as pc2 operator revoke does).
	cur, err := names.Lookup(ctx, "renewing.pc2.test")
	if err != nil {
		t.Fatal(err)
	}
	revokeName(t, gw, op, cur, "spam reported")
	owner := cloudtest.New(t, base, nil)
	owner.Login("owner password")
	testenv.WaitFor(t, 20*time.Second, "the dashboard to say the name was revoked", func() bool {
		page := owner.Get("/_/").Body
		return strings.Contains(page, "renewing.pc2.test was revoked by the operator of pc2.test: spam reported")
	})
}

func testOperatorKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// revokeName signs the operator's revocation of cur's holding and puts
// it into gw's DHT from a client node, as pc2 operator revoke does.
func revokeName(t *testing.T, gw *gwtest.Gateway, op ed25519.PrivateKey, cur *namesapi.NameInfo, reason string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := dhtClient(t, gw.Addrs).RevokeName(ctx, cur.Name, op, reason, time.Hour); err != nil {
		t.Fatal(err)
	}
}

// dhtClient is a DHT client node joined through the supernodes at addrs,
// until the test ends.
func dhtClient(t *testing.T, addrs []string) *dht.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot, err := dht.ParseAddrInfos(addrs)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	n, err := dht.New(context.Background(), dht.Config{Key: key, Mode: dht.ModeClient, Bootstrap: boot, AllowUnknownDomains: true, Logger: testlog.New(t, 8)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// setUpNode runs a fresh node with cfg and opts (Listener and Logger set
// here) until the test ends, and goes through its setup wizard from the
// local network: a new identity, the password "owner password", and label
// claimed at the first name service. It returns the node's base URL.
func setUpNode(t *testing.T, cfg *Config, opts Options, label string) string {
	t.Helper()
	base, _ := startNode(t, cfg, opts)
	owner := cloudtest.New(t, base, nil)
	owner.CreateIdentity()
	owner.Password("owner password")
	if r := owner.Claim(label, ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim: %d %s", r.Code, r.Err())
	}
	return base
}

// startNode runs a node with cfg and opts (Listener and Logger set here)
// until the test ends or stop is called; it returns its base URL.
func startNode(t *testing.T, cfg *Config, opts Options) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener, opts.Logger = ln, testlog.New(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, opts) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}
