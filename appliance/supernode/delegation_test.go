package supernode

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestDelegatedGateway (issue 20): a supernode whose config holds the
// operator's delegation, not its key, grants names with its own key;
// a delegation that is not this supernode's, not from the pinned
// operator or expired stops it at start with the reason.
func TestDelegatedGateway(t *testing.T) {
	dir := t.TempDir()
	_, op, _ := ed25519.GenerateKey(nil)
	opID, _ := identity.IDFromPublicKey(op.Public().(ed25519.PublicKey))
	_, self, _ := ed25519.GenerateKey(nil)
	selfID, _ := identity.IDFromPublicKey(self.Public().(ed25519.PublicKey))
	keyFile := filepath.Join(dir, "supernode.key")
	if err := identity.WriteKeyFile(keyFile, self); err != nil {
		t.Fatal(err)
	}
	const domain = "pc2.test"
	writeDelegation := func(name string, signer ed25519.PrivateKey, d records.Delegation) string {
		sd, err := records.SignDelegation(signer, &d)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sd)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	good := records.Delegation{Version: records.Version, Domain: domain, Operator: opID, Supernode: selfID,
		IssuedAt: now.Add(-time.Minute).Unix(), Expires: now.Add(time.Hour).Unix()}
	run := func(delegation string) (string, func(), error) {
		cfg := &Config{KeyFile: keyFile, DataDir: filepath.Join(dir, "data"), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
			AllowPrivateDials: true, Domains: []DomainTrust{{Domain: domain, Operator: opID.DID()}},
			Gateway: &GatewayConfig{HTTPListen: "127.0.0.1:0", Delegations: map[string]string{domain: delegation},
				RouteTTL: config.Duration(time.Hour)}}
		if err := cfg.Check(); err != nil {
			return "", nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan error, 1)
		go func() {
			done <- Run(ctx, cfg, Options{Logger: testlog.New(t, 0), GatewayHTTPListener: ln,
				Ready: func([]string) { close(ready) }})
		}()
		select {
		case <-ready:
		case err := <-done:
			cancel()
			return "", nil, err
		}
		return "http://" + ln.Addr().String(), func() { cancel(); <-done }, nil
	}

	for name, tc := range map[string]struct {
		signer ed25519.PrivateKey
		edit   func(*records.Delegation)
		want   string
	}{
		"another supernode's": {op, func(d *records.Delegation) { d.Supernode = opID }, "not this supernode"},
		"another operator's":  {self, func(d *records.Delegation) { d.Operator = selfID }, "but domains pins"},
		"expired": {op, func(d *records.Delegation) {
			d.IssuedAt, d.Expires = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}, "expired"},
	} {
		d := good
		tc.edit(&d)
		_, stop, err := run(writeDelegation(strings.ReplaceAll(name, " ", "-"), tc.signer, d))
		if err == nil {
			stop()
			t.Fatalf("%s delegation: the supernode started", name)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s delegation: %v, want %q", name, err, tc.want)
		}
		t.Logf("%s delegation: %v", name, err)
	}

	api, stop, err := run(writeDelegation("good", op, good))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, alice, _ := ed25519.GenerateKey(nil)
	c := &namesapi.Client{API: api}
	ni, err := c.Claim(context.Background(), alice, "alice."+domain, "")
	if err != nil {
		t.Fatal(err)
	}
	if ni.Signer != selfID.DID() || ni.Operator != opID.DID() || ni.RouteUntil.Sub(ni.IssuedAt) != time.Hour {
		t.Fatalf("granted %+v, want signed by this supernode for %s, routing for an hour", ni, opID.DID())
	}
}
