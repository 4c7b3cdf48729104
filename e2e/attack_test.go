package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/gateway/namesapi"
	"github.com/pc2/pc2/services/relay"
)

// attackConfig is what the attacker process is told: where the
// supernode and its gateway are, and whom to attack.
type attackConfig struct {
	Supernode string `json:"supernode"` // full multiaddr
	Gateway   string `json:"gateway"`   // http://address of the gateway
	Name      string `json:"name"`      // the victim's name
	DID       string `json:"did"`       // the victim's DID
	Domain    string `json:"domain"`
}

// attackReport is what the attacker got, printed as one JSON line.
type attackReport struct {
	Forwards, ForwardsRefused int
	Guesses, GuessesLimited   int
	Sockets, SocketsHeld      int
	Attaches, PortsGranted    int
	Claims, ClaimsGranted     int
	LookalikeRefused          bool
}

// runAttacker is the attacker role of TestHelper: a stranger on the
// public segment with fresh keys, trying every attack of issue 16 on
// the victim at once, then holding what it got (its WebSockets, its
// attached keys) until it is killed.
func runAttacker(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c attackConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	id, err := identity.ParseDID(c.DID)
	if err != nil {
		return err
	}
	sn, err := peer.AddrInfoFromString(c.Supernode)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var r attackReport
	h, err := libp2p.New(libp2p.ListenAddrStrings())
	if err != nil {
		return err
	}
	// 1. Raw HTTP to the victim through the relay, with forged client
	// addresses (finding 1).
	for i := range 10 {
		r.Forwards++
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := relay.Forward(fctx, h, *sn, id, relay.ProtocolHTTP)
		cancel()
		if errors.Is(err, relay.ErrForwardRefused) {
			r.ForwardsRefused++
			continue
		}
		if err == nil {
			fmt.Fprintf(conn, "POST /_/login HTTP/1.1\r\nHost: %s\r\nX-Forwarded-For: 198.51.100.%d\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\npassword=guess", c.Name, i)
			conn.Close()
		}
	}
	// 2. Password guesses through the gateway, rotating X-Forwarded-For.
	web := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range 20 {
		r.Guesses++
		req, _ := http.NewRequest("POST", c.Gateway+"/_/login", strings.NewReader(url.Values{"password": {fmt.Sprintf("guess%d", i)}}.Encode()))
		req.Host = c.Name
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		if resp, err := web.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				r.GuessesLimited++
			}
		}
	}
	// 3. Hold as many of the victim's streams as the gateway gives
	// (finding 3), all at once: those over the share wait in the
	// gateway's line and are refused when it ends (issue 21).
	gw, _ := url.Parse(c.Gateway)
	gwAddr := net.JoinHostPort(gw.Hostname(), "80")
	ws := websocket.Dialer{NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, gwAddr) },
		HandshakeTimeout: 30 * time.Second}
	var held []*websocket.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 300 {
		r.Sockets++
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, _, err := ws.Dial("ws://"+c.Name+"/ws", nil)
			if err == nil {
				mu.Lock()
				held = append(held, conn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.SocketsHeld = len(held)
	// 4. Fresh keys attaching with TCP services (finding 4).
	for range 20 {
		r.Attaches++
		_, key, _ := ed25519.GenerateKey(nil)
		// The attached hosts stay up (and attached) until the process ends.
		n, err := attachFresh(ctx, key, *sn)
		if err != nil {
			continue
		}
		r.PortsGranted += n.ports
	}
	// 5. Names from fresh keys, and a look-alike (finding 5).
	api := &namesapi.Client{API: c.Gateway}
	for i := range 10 {
		r.Claims++
		_, key, _ := ed25519.GenerateKey(nil)
		if _, err := api.Claim(ctx, key, fmt.Sprintf("squat%d.%s", i, c.Domain), ""); err == nil {
			r.ClaimsGranted++
		}
	}
	_, key, _ := ed25519.GenerateKey(nil)
	_, err = api.Claim(ctx, key, "xn--80ak6aa92e."+c.Domain, "")
	var ae *namesapi.APIError
	r.LookalikeRefused = errors.As(err, &ae) && ae.Code == "lookalike"

	out, _ := json.Marshal(r)
	fmt.Printf("report %s\n", out)
	fmt.Println("ready")
	select {} // hold the sockets and attachments until killed
}

// libp2pKey is key as libp2p's identity.
func libp2pKey(key ed25519.PrivateKey) (crypto.PrivKey, error) {
	return crypto.UnmarshalEd25519PrivateKey(key)
}

// attached is a fresh key attached to a relay.
type attached struct {
	h     host.Host
	ports int
}

// attachFresh attaches key to sn asking for four TCP services.
func attachFresh(ctx context.Context, key ed25519.PrivateKey, sn peer.AddrInfo) (*attached, error) {
	sk, err := libp2pKey(key)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(libp2p.Identity(sk), libp2p.ListenAddrStrings())
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.Connect(actx, sn); err != nil {
		return nil, err
	}
	st, err := h.NewStream(actx, sn.ID, relay.ProtocolAttach)
	if err != nil {
		return nil, err
	}
	ch, err := relay.ReadMessage(st)
	if err != nil {
		return nil, err
	}
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err := relay.WriteMessage(st, relay.SignAttach(key, ch, id.DID(), time.Now(), []string{"a", "b", "c", "d"})); err != nil {
		return nil, err
	}
	m, err := relay.ReadMessage(st)
	if err != nil || m.Type != relay.TypeAttached {
		return nil, fmt.Errorf("attach: %+v %v", m, err)
	}
	return &attached{h: h, ports: len(m.Ports)}, nil
}

// TestAttackerBesideNode (issue 16): alice's node sits behind NAT,
// attached to supernode A (its gateway holds the operator key); a
// stranger on the public segment, with fresh keys, tries the attacks of
// issue 16 at once: raw HTTP with forged client addresses through the
// relay, password guesses through the gateway, holding the node's
// streams, filling the relay's ports with fresh keys, squatting names.
// Each is refused or bounded, and while the stranger holds what it got,
// a visitor reaches alice's site and alice logs in, at home and through
// the gateway.
func TestAttackerBesideNode(t *testing.T) {
	tp := nattest.New(t)
	dir := t.TempDir()
	opFile, opID, _ := keyFile(t, dir, "operator.key")
	aKey, _, aPeer := keyFile(t, dir, "a.key")
	aAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), aPeer)
	gwURL := "http://" + tp.SupernodeA.Addr().String()
	start(t, tp.SupernodeA, "supernode", "supernode-a", &supernode.Config{KeyFile: aKey, DataDir: filepath.Join(dir, "a"),
		Listen: []string{"/ip4/0.0.0.0/tcp/8090"}, Domains: []supernode.DomainTrust{{Domain: testDomain, Operator: opID.DID()}},
		AllowPrivateDials: true, // the scenario's networks are private
		Gateway:           &supernode.GatewayConfig{HTTPListen: ":80", OperatorKeys: map[string]string{testDomain: opFile}}})
	start(t, tp.Node1, "node", "alice", &personal.Config{KeyFile: filepath.Join(dir, "alice", "node.key"), Supernodes: []string{aAddr},
		NameServices: []cloud.NameService{{Domain: testDomain, API: gwURL}}})

	// Alice sets her node up at home (its own listener, from its LAN).
	atHome := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return tp.Node1.Dial(ctx, network, "127.0.0.1:4200")
	}}}
	home := cloudtest.New(t, "http://127.0.0.1:4200", atHome)
	home.CreateIdentity()
	home.Password("alice's password")
	if r := home.Claim("alice", ""); r.Code != http.StatusSeeOther {
		t.Fatalf("claim: %d %s", r.Code, r.Err())
	}
	status := home.Get("/api/status")
	var st struct{ DID string }
	if err := json.Unmarshal([]byte(status.Body), &st); err != nil || st.DID == "" {
		t.Fatalf("status: %s %v", status.Body, err)
	}
	user := userClient(tp.Client, tp.SupernodeA.Addr().String(), nil)
	name := "alice." + testDomain
	waitOK(t, user, "http://"+name+"/hello", 30*time.Second)

	// The stranger attacks, and keeps holding what it got.
	cfg := attackConfig{Supernode: aAddr, Gateway: gwURL, Name: name, DID: st.DID, Domain: testDomain}
	attacker := start(t, tp.Direct, "attacker", "attacker", cfg)
	var rep attackReport
	for _, line := range strings.Split(attacker.Log(), "\n") {
		if j, ok := strings.CutPrefix(line, "report "); ok {
			if err := json.Unmarshal([]byte(j), &rep); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("attacker: %+v", rep)
	if rep.Forwards == 0 {
		t.Fatal("no report from the attacker")
	}
	if rep.ForwardsRefused != rep.Forwards {
		t.Errorf("forged forwards: %d of %d refused, want all", rep.ForwardsRefused, rep.Forwards)
	}
	if rep.GuessesLimited < rep.Guesses-5 {
		t.Errorf("password guesses with rotating X-Forwarded-For: %d of %d limited, want all past the first 5", rep.GuessesLimited, rep.Guesses)
	}
	if rep.SocketsHeld == 0 || rep.SocketsHeld > 64 {
		t.Errorf("the stranger holds %d of alice's streams, want its share of 64 at most (and some: the attack must reach her)", rep.SocketsHeld)
	}
	if rep.PortsGranted > 16*4 {
		t.Errorf("fresh keys from one address got %d mapped ports, want at most 16 nodes' (64)", rep.PortsGranted)
	}
	if rep.ClaimsGranted > 5 {
		t.Errorf("fresh keys from one address claimed %d names, want at most 5", rep.ClaimsGranted)
	}
	if !rep.LookalikeRefused {
		t.Error("a look-alike name was not refused")
	}

	// Meanwhile a visitor gets alice's pages...
	for i := range 10 {
		if code, body := fetch(t, user, "GET", "http://"+name+"/hello", nil); code != 200 {
			t.Fatalf("visitor %d during the attack: %d %q", i, code, body)
		}
	}
	// ...and alice logs in, at home and away (through the gateway).
	cloudtest.New(t, "http://127.0.0.1:4200", atHome).Login("alice's password")
	away := cloudtest.New(t, "http://"+tp.SupernodeA.Addr().String(), userClient(tp.Client, tp.SupernodeA.Addr().String(), nil))
	away.Host = name
	away.Login("alice's password")
	if r := away.Get("/_/"); r.Code != 200 {
		t.Fatalf("alice's dashboard through the gateway during the attack: %d", r.Code)
	}
}
