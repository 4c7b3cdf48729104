// Package gwtest runs a supernode with its web gateway for one domain on
// loopback, from a real supernode config, holding the domain's operator
// key (open name policy): the names API and the friendly URLs that tests
// of the CLI, the personal cloud and the appliance talk to.
package gwtest

import (
	"context"
	"crypto/ed25519"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
)

// Options of Start; the zero value serves pc2.test over plain HTTP.
type Options struct {
	Domain string // default "pc2.test"
	// Operator is the domain's operator key (nil: a new one).
	Operator ed25519.PrivateKey
	// Bootstrap are supernodes to join.
	Bootstrap []string
	// HTTPListener is the gateway's HTTP listener (nil: 127.0.0.1:0);
	// HTTPSListener, if set, serves HTTPS with certificates from ACME.
	HTTPListener, HTTPSListener net.Listener
	ACME                        supernode.ACMEConfig
	// GrantTTL is the lifetime of name grants, RouteTTL how long they
	// route visitors (0: the defaults).
	GrantTTL, RouteTTL time.Duration
	// ServeOnly: the supernode serves the domain without its operator
	// key (it grants no names and does not list itself in the domain's
	// record): another supernode of the operator's does.
	ServeOnly bool
	// TLS is the domain's TLS mode (auto, end-to-end, gateway; "":
	// auto).
	TLS string
	// Mesh are other operators' domains the supernode trusts;
	// MeshOpen lets their gateways serve this domain's names.
	Mesh     []supernode.DomainTrust
	MeshOpen bool
	// Listen are the supernode's libp2p listeners (nil: a loopback TCP
	// port); Announce, more addresses it tells (supernode.Config).
	Listen, Announce []string
	// Metrics serves the supernode's metrics (Gateway.Metrics).
	Metrics bool
	// CustomDomains is the custom-domain policy (nil: none).
	CustomDomains *supernode.CustomDomainsConfig
}

// Gateway is a running gateway supernode.
type Gateway struct {
	Domain   string
	Addrs    []string // the supernode's multiaddrs
	API      string   // http://<its HTTP listener>: the names API
	Metrics  string   // http://<its metrics listener>/metrics, with Options.Metrics
	HTTPPort int
	Operator identity.ID
	DataDir  string // the supernode's (its certificates in certs/)
	stop     func()
}

// Stop ends the supernode before the test does (it dies).
func (g *Gateway) Stop() { g.stop() }

// Start runs the gateway supernode until the test ends.
func Start(t testing.TB, o Options) *Gateway {
	t.Helper()
	dir := t.TempDir()
	if o.Domain == "" {
		o.Domain = "pc2.test"
	}
	if o.Operator == nil {
		_, o.Operator, _ = ed25519.GenerateKey(nil)
	}
	op, _ := identity.IDFromPublicKey(o.Operator.Public().(ed25519.PublicKey))
	opFile := filepath.Join(dir, "operator.key")
	if err := identity.WriteKeyFile(opFile, o.Operator); err != nil {
		t.Fatal(err)
	}
	if o.HTTPListener == nil {
		var err error
		if o.HTTPListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &supernode.Config{KeyFile: filepath.Join(dir, "sn.key"), CreateKey: true, DataDir: filepath.Join(dir, "sn"),
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: o.Bootstrap, AllowPrivateDials: true,
		Domains: []supernode.DomainTrust{{Domain: o.Domain, Operator: op.DID()}},
		Gateway: &supernode.GatewayConfig{HTTPListen: "127.0.0.1:0", OperatorKeys: map[string]string{o.Domain: opFile},
			GrantTTL: config.Duration(o.GrantTTL), RouteTTL: config.Duration(o.RouteTTL)}}
	cfg.Mesh = o.Mesh
	if o.Listen != nil {
		cfg.Listen = o.Listen
	}
	cfg.Announce = o.Announce
	cfg.Gateway.CustomDomains = o.CustomDomains
	if o.MeshOpen {
		cfg.Gateway.MeshOpen = []string{o.Domain}
	}
	if o.ServeOnly {
		cfg.Gateway.OperatorKeys, cfg.Gateway.MeshOpen = nil, nil
	}
	if o.TLS != "" && !o.ServeOnly {
		cfg.Gateway.TLS = map[string]string{o.Domain: o.TLS}
	}
	opts := supernode.Options{Logger: testlog.New(t, 0), GatewayHTTPListener: o.HTTPListener}
	if o.HTTPSListener != nil {
		cfg.Gateway.HTTPSListen = "127.0.0.1:0"
		cfg.Gateway.ACME = o.ACME
		opts.GatewayHTTPSListener = o.HTTPSListener
	}
	var metricsURL string
	if o.Metrics {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.MetricsListener, metricsURL = ln, "http://"+ln.Addr().String()+"/metrics"
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	opts.Ready = func(a []string) { ready <- a }
	go func() { done <- supernode.Run(ctx, cfg, opts) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	g := &Gateway{Domain: o.Domain, API: "http://" + o.HTTPListener.Addr().String(), Metrics: metricsURL,
		HTTPPort: o.HTTPListener.Addr().(*net.TCPAddr).Port, Operator: op, DataDir: cfg.DataDir, stop: stop}
	select {
	case g.Addrs = <-ready:
	case err := <-done:
		once.Do(func() {})
		t.Fatalf("gateway supernode: %v", err)
	}
	return g
}
