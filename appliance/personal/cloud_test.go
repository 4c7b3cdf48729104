package personal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestCloudWizardGatewayRestore: a node without an identity serves the
// setup wizard; the owner creates an identity, sets a password and claims
// alice.pc2.test at a real supernode's names API; the node joins the
// network with that identity, and its public site and a share link work
// at the friendly URL through the gateway and relay (where the wizard and
// the owner's pages are not open). Then the same words restore the
// identity on a fresh device, which takes the name back (another
// identity cannot).
func TestCloudWizardGatewayRestore(t *testing.T) {
	dir := t.TempDir()
	gw := gwtest.Start(t, gwtest.Options{})
	api, addrs := gw.API, gw.Addrs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// startNode runs a fresh device's node (no key, no create_key).
	startNode := func(name string) (string, *Config, func()) {
		ncfg := &Config{KeyFile: filepath.Join(dir, name, "node.key"), Mode: ModeRelayed, Supernodes: addrs,
			NameServices: []cloud.NameService{{Domain: "pc2.test", API: api}}}
		base, stop := runNode(t, ctx, ncfg)
		return base, ncfg, stop
	}
	base, ncfg, stop := startNode("one")
	local := cloudtest.New(t, base, nil)
	if r := local.Get("/api/status"); !strings.Contains(r.Body, `"state":"waiting"`) || !strings.Contains(r.Body, `"setup":"wizard"`) {
		t.Fatalf("status without identity: %s", r.Body)
	}
	words := local.CreateIdentity()
	key, err := identity.LoadKeyFile(ncfg.KeyFile)
	if err != nil {
		t.Fatalf("the wizard wrote no key: %v", err)
	}
	want, _ := identity.NodeKeyFromMnemonic(strings.Join(words, " "), "")
	if !key.Equal(want) {
		t.Fatal("the key file is not the words' key")
	}
	wantPW, _ := identity.BackupPasswordFromMnemonic(strings.Join(words, " "), "")
	if pw, err := os.ReadFile(identity.BackupPasswordFile(ncfg.KeyFile)); err != nil || strings.TrimSpace(string(pw)) != wantPW {
		t.Fatalf("the wizard kept no backup password of the words: %q %v", pw, err)
	}
	did, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	local.Password("owner password")
	if r := local.Claim("Alice", ""); r.Code != http.StatusSeeOther || r.Location() != "/_/" {
		t.Fatalf("claim in the wizard: %d %s", r.Code, r.Err())
	}
	if r := local.Get("/_/"); !strings.Contains(r.Body, "alice.pc2.test") || !strings.Contains(r.Body, did.DID()) {
		t.Fatalf("dashboard lacks the name or DID: %d", r.Code)
	}
	if r := local.Upload("public/index.html", strings.NewReader("<h1>Alice's site</h1>")); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	if r := local.Upload("notes.txt", strings.NewReader("shared notes")); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	link := local.Share("notes.txt", 7)

	// Through the gateway and the relay, by name.
	visitor := cloudtest.New(t, api, nil)
	visitor.Host = "alice.pc2.test"
	testenv.WaitFor(t, 30*time.Second, "the site at alice.pc2.test", func() bool { return visitor.Get("/").Body == "<h1>Alice's site</h1>" })
	if r := visitor.Get(link); r.Code != 200 || r.Body != "shared notes" {
		t.Fatalf("share link through the gateway: %d %q", r.Code, r.Body)
	}
	if r := visitor.Get("/_/"); r.Code != http.StatusSeeOther || !strings.HasPrefix(r.Location(), "/_/login") {
		t.Fatalf("owner pages through the gateway: %d %s", r.Code, r.Location())
	}
	visitor.Login("owner password") // the owner, away from home
	if r := visitor.Get("/_/dl/notes.txt"); r.Body != "shared notes" {
		t.Fatalf("owner download through the gateway: %d", r.Code)
	}
	stop()

	// A fresh device with the same words: the same DID, the name back.
	base2, ncfg2, stop2 := startNode("two")
	defer stop2()
	b2 := cloudtest.New(t, base2, nil)
	b2.Restore(strings.Join(words, "\n"))
	k2, err := identity.LoadKeyFile(ncfg2.KeyFile)
	if err != nil || !k2.Equal(key) {
		t.Fatalf("restored key differs: %v", err)
	}
	b2.Password("owner password 2")
	if r := b2.Claim("alice", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("taking the name back: %d %s", r.Code, r.Err())
	}
	if r := b2.Upload("public/index.html", strings.NewReader("<h1>Alice, new device</h1>")); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	testenv.WaitFor(t, 30*time.Second, "alice.pc2.test served by the restored device", func() bool {
		return visitor.Get("/").Body == "<h1>Alice, new device</h1>"
	})

	// Another identity cannot take the name.
	base3, _, stop3 := startNode("three")
	defer stop3()
	b3 := cloudtest.New(t, base3, nil)
	b3.CreateIdentity()
	b3.Password("mallory password")
	if r := b3.Claim("alice", ""); r.Code != http.StatusUnprocessableEntity || !strings.Contains(r.Err(), "could not be claimed") {
		t.Fatalf("claim of alice by another identity: %d %s", r.Code, r.Err())
	}
	if r := b3.Get("/_/setup"); !strings.Contains(r.Body, `id="claim"`) {
		t.Fatal("after a refused claim the wizard is not at the name step")
	}
	// The replaced-key rule: restoring over an identity keeps the old key.
	if r := b3.TryStep("start-over", nil); r.Code != http.StatusSeeOther {
		t.Fatal(r.Code)
	}
	b3.Restore(strings.Join(words, " "))
	old, _ := filepath.Glob(filepath.Join(dir, "three", "node.key.replaced-*"))
	if len(old) != 1 {
		t.Fatalf("old key not kept aside: %v", old)
	}
	if b, _ := os.ReadFile(old[0]); !bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatal("kept key file is not a key")
	}
}

// runNode runs a node of ncfg on a loopback port until stop, which
// fails the test if the node ended with an error.
func runNode(t *testing.T, ctx context.Context, ncfg *Config) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(nctx, ncfg, Options{Listener: ln, Logger: testlog.New(t, 0)}) }()
	return "http://" + ln.Addr().String(), func() {
		ncancel()
		if err := <-done; err != nil {
			t.Errorf("node %s: %v", ncfg.KeyFile, err)
		}
	}
}

// TestManyRelayedRequests: a node answers as many concurrent requests
// through a gateway and its relay as the relay allows a node (256),
// not the ~64-75 streams per protocol and peer of libp2p's default
// limits. The requests come from four client addresses: the gateway gives
// one client at most gateway.DefaultStreamsPerClient of them.
func TestManyRelayedRequests(t *testing.T) {
	const n = 180 // below the gateway's per-client burst of 200
	gw := gwtest.Start(t, gwtest.Options{})
	var inFlight atomic.Int32
	release := make(chan struct{})
	startNamedNode(t, gw, "load.pc2.test", Options{Routes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
			inFlight.Add(1)
			<-release
			w.Write([]byte("ok"))
		})
	}})
	var clients []*http.Client
	for i := range 4 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}}
		clients = append(clients, &http.Client{Timeout: time.Minute,
			Transport: &http.Transport{DialContext: d.DialContext, MaxConnsPerHost: n, MaxIdleConnsPerHost: n}})
	}
	var next atomic.Int32
	get := func() (int, error) {
		req, _ := http.NewRequest("GET", gw.API+"/hold", nil)
		req.Host = "load.pc2.test"
		resp, err := clients[int(next.Add(1))%len(clients)].Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// One first, so the gateway has resolved the name.
	go func() { time.Sleep(2 * time.Second); release <- struct{}{} }()
	if code, err := get(); code != 200 {
		t.Fatalf("first request: %d %v", code, err)
	}
	inFlight.Store(0)
	codes := make(chan string, n)
	for range n {
		go func() {
			code, err := get()
			codes <- fmt.Sprint(code, " ", err)
		}()
	}
	end := time.Now().Add(30 * time.Second)
	for inFlight.Load() < n && time.Now().Before(end) {
		select {
		case c := <-codes:
			t.Fatalf("a request ended while all were held: %s (%d in flight)", c, inFlight.Load())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got := inFlight.Load(); got != n {
		t.Fatalf("%d of %d concurrent requests reached the node", got, n)
	}
	close(release)
	for range n {
		if c := <-codes; c != "200 <nil>" {
			t.Fatalf("request: %s", c)
		}
	}
}

// TestStrangerAtFriendlyURL: an internet visitor at the friendly URL,
// through the gateway and the relay, gets the public site's 404 for the
// appliance's admin API (AdminRoutes), the right admin password
// notwithstanding, and a status without the node's network details
// (its supernodes, tunnel and STUN results, dial-back errors); on the
// node's listener from the local network both answer in full.
func TestStrangerAtFriendlyURL(t *testing.T) {
	gw := gwtest.Start(t, gwtest.Options{})
	node, addr := startNamedNode(t, gw, "owner1.pc2.test", Options{AdminRoutes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /api/device", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("admin")) })
	}})
	get := func(url, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/api/device", nil)
		if host != "" {
			req.Host = host
		}
		req.SetBasicAuth("admin", "the right password")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The node is reachable at its friendly URL (its public site answers)...
	testenv.WaitFor(t, 30*time.Second, "the friendly URL to reach the node", func() bool {
		req, _ := http.NewRequest("GET", gw.API+"/", nil)
		req.Host = "owner1.pc2.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusBadGateway
	})
	// ...but not its admin API.
	if code, body := get(gw.API, "owner1.pc2.test"); code != http.StatusNotFound || strings.Contains(body, "admin") {
		t.Errorf("admin API through the gateway: got %d %q, want the public site's 404", code, body)
	}
	if code, body := get("http://"+addr, ""); code != 200 || body != "admin" {
		t.Errorf("admin API on the node's listener: got %d %q, want 200 admin", code, body)
	}
	status := func(url, host string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/api/status", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %s (Host %q): %d %v", url, host, resp.StatusCode, err)
		}
		return st
	}
	public := status(gw.API, "owner1.pc2.test")
	if public["did"] != node.Status().DID || public["state"] != "online" {
		t.Errorf("status through the gateway: got %v, want the DID and online", public)
	}
	for _, k := range []string{"tunnel", "supernodes", "mode", "setup", "last_error", "peers", "version"} {
		if _, ok := public[k]; ok {
			t.Errorf("status through the gateway shows %q to a stranger: %v", k, public)
		}
	}
	if local := status("http://"+addr, ""); local["tunnel"] == nil || local["mode"] != "relayed" {
		t.Errorf("status on the local network: got %v, want the tunnel and the mode", local)
	}
}

// startNamedNode runs a relayed personal node attached to gw with opts
// (Listener, Logger and Started are set here), waits until it is online
// and claims name for it at gw's names API. The node stops when the test
// ends. It returns the node and its own listener's address.
func startNamedNode(t *testing.T, gw *gwtest.Gateway, name string, opts Options) (*Node, string) {
	t.Helper()
	cfg := &Config{KeyFile: filepath.Join(t.TempDir(), "node.key"), CreateKey: true, Mode: ModeRelayed, Supernodes: gw.Addrs}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan *Node, 1)
	opts.Listener, opts.Logger = ln, testlog.New(t, slog.LevelWarn)
	opts.Started = func(n *Node) { started <- n }
	go func() { done <- Run(ctx, cfg, opts) }()
	t.Cleanup(func() { cancel(); <-done })
	node := <-started
	testenv.WaitFor(t, 30*time.Second, "node online", func() bool { return node.Status().State == "online" })
	key, err := identity.LoadKeyFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&namesapi.Client{API: gw.API}).Claim(ctx, key, name, ""); err != nil {
		t.Fatal(err)
	}
	return node, ln.Addr().String()
}
