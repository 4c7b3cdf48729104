package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/time/rate"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/certs"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// GatewayConfig is the web gateway's part of the config. It serves every
// domain of Config.Domains.
type GatewayConfig struct {
	// HTTPListen is the plain HTTP address (":80"). Without HTTPS it
	// serves the names there; with HTTPS it only answers ACME HTTP-01
	// challenges and redirects to HTTPS.
	HTTPListen string `json:"http_listen"`
	// HTTPSListen is the HTTPS address (":443"); empty: no TLS (a LAN or
	// a test; browsers will warn).
	HTTPSListen string `json:"https_listen,omitempty"`
	// OperatorKeys are the operator key files (PKCS#8 PEM) of the domains
	// this supernode grants names for; each must be the key the domain's
	// entry pins. Other domains are served, but their claims are refused.
	OperatorKeys map[string]string `json:"operator_keys,omitempty"`
	// Delegations are the operator's delegation files (`pc2 operator
	// delegate`) of the domains this supernode grants names for with its
	// own key: each must be from the operator the domain's entry pins,
	// to this supernode's key. Grants it signs carry the delegation, so
	// every DHT node checks them without the operator's key ever being
	// on this machine.
	Delegations map[string]string `json:"delegations,omitempty"`
	// TLS is, per domain of OperatorKeys, where its visitors' TLS ends:
	// "auto" (the default: at the node once it holds a certificate,
	// else here), "end-to-end" (only at the node: visitors of a node
	// without one cannot connect) or "gateway" (always here). It goes
	// into the domain record this supernode publishes, which every
	// gateway of the domain follows; unset, the record keeps the mode it
	// has (a new record: auto).
	TLS map[string]string `json:"tls,omitempty"`
	// MeshOpen are domains of OperatorKeys whose record lets other
	// operators' gateways (those that have them in their mesh) serve
	// their names to visitors who reach them (records.Domain.Mesh). A
	// domain of OperatorKeys not listed here is closed to the mesh.
	MeshOpen []string `json:"mesh_open,omitempty"`
	// CustomDomains, if set, serves owners' own domains: a host whose
	// DNS points here and holds a proof signed by a node's DID (a TXT
	// record at _pc2.<host>) goes to that node.
	CustomDomains *CustomDomainsConfig `json:"custom_domains,omitempty"`
	// Policy says who may claim new names (open, invite, allowlist).
	Policy gateway.Policy `json:"policy,omitempty"`
	// Reserved are labels nobody may claim, on top of the built-in list.
	Reserved []string `json:"reserved,omitempty"`
	// GrantTTL is how long a grant this supernode signs keeps the name
	// reserved to its holder (default 90 days); RouteTTL how long it
	// routes visitors to it (default 24 hours; nodes renew at half of
	// it).
	GrantTTL config.Duration `json:"grant_ttl,omitempty"`
	RouteTTL config.Duration `json:"route_ttl,omitempty"`
	// RateLimit and Burst limit requests per client IP per second (0:
	// the gateway's defaults).
	RateLimit float64 `json:"rate_limit,omitempty"`
	Burst     int     `json:"burst,omitempty"`
	// ACME gets the HTTPS certificates (with HTTPSListen).
	ACME ACMEConfig `json:"acme,omitempty"`
}

// CustomDomainsConfig is the operator's policy for owners' own domains.
type CustomDomainsConfig struct {
	// Policy is "open" (any node with a valid proof), "invite" (hosts
	// registered with an invite code at one of the operator's
	// supernodes: POST /api/hosts) or "allowlist".
	Policy string `json:"policy"`
	// Allow are the DIDs of the allowlist.
	Allow []string `json:"allow,omitempty"`
	// Invites are the codes of the invite policy, each good for one
	// host; a supernode without codes serves registered hosts but takes
	// no registrations.
	Invites []string `json:"invites,omitempty"`
	// PerNode bounds the custom domains served for one node (default 3).
	PerNode int `json:"per_node,omitempty"`
	// DNSServer is the DNS server proofs are read from, host:port
	// (default: the system's resolver).
	DNSServer string `json:"dns_server,omitempty"`
}

// custom builds the gateway's custom-domain settings.
func (c *CustomDomainsConfig) custom(node *dht.Node) (*gateway.Custom, error) {
	if c == nil {
		return nil, nil
	}
	g := &gateway.Custom{Policy: c.Policy, PerNode: c.PerNode, ResolveDID: node.ResolveDID, LookupTXT: gateway.LookupTXTWith(c.DNSServer),
		Invites: c.Invites, Tally: node.CurrentTally}
	for _, d := range c.Allow {
		id, err := identity.ParseDID(d)
		if err != nil {
			return nil, fmt.Errorf("gateway: custom_domains: allow: %w", err)
		}
		g.Allow = append(g.Allow, id)
	}
	return g, nil
}

// ACMEConfig says where the gateway's certificates come from. Without a
// DNS provider each registered name (and each apex) gets its own
// certificate on its first TLS handshake, by HTTP-01 on port 80 or
// TLS-ALPN-01 on 443; with one, a wildcard certificate per domain comes
// through DNS-01 at start.
type ACMEConfig struct {
	// CA is the ACME directory URL (default Let's Encrypt production).
	CA string `json:"ca,omitempty"`
	// CARootFile is a PEM file of roots for the CA's own HTTPS, for a
	// private or test CA (default: the system's roots).
	CARootFile string `json:"ca_root_file,omitempty"`
	// CARoot is the same roots inline (PEM), e.g. from device settings.
	CARoot string `json:"ca_root,omitempty"`
	// Email is the ACME account's contact (recommended: expiry notices).
	Email string `json:"email,omitempty"`
	// DNS is the DNS provider for DNS-01 wildcard certificates.
	DNS *certs.DNSConfig `json:"dns,omitempty"`
}

// check reports the first problem with the gateway config.
func (g *GatewayConfig) check(c *Config) error {
	if g.HTTPListen == "" && g.HTTPSListen == "" {
		return errors.New("gateway: http_listen or https_listen is required")
	}
	for _, a := range []string{g.HTTPListen, g.HTTPSListen} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("gateway: listen address %q: %w", a, err)
		}
	}
	if len(c.Domains) == 0 {
		return errors.New("gateway: no domains to serve (add them to domains)")
	}
	if g.HTTPSListen != "" && g.HTTPListen == "" && g.ACME.DNS == nil {
		return errors.New("gateway: https_listen without http_listen needs acme.dns (HTTP-01 challenges come on port 80)")
	}
	trust, err := c.Trust()
	if err != nil {
		return err
	}
	for d := range g.OperatorKeys {
		if _, ok := trust[d]; !ok {
			return fmt.Errorf("gateway: operator key for %s, which is not in domains", d)
		}
	}
	for d := range g.Delegations {
		if _, ok := trust[d]; !ok {
			return fmt.Errorf("gateway: delegation for %s, which is not in domains", d)
		}
	}
	if cd := g.CustomDomains; cd != nil {
		if cd.Policy != gateway.CustomOpen && cd.Policy != gateway.CustomInvite && cd.Policy != gateway.CustomAllowlist {
			return fmt.Errorf("gateway: custom_domains: policy %q: want open, invite or allowlist", cd.Policy)
		}
		if cd.PerNode < 0 || cd.PerNode > records.MaxTallied {
			return fmt.Errorf("gateway: custom_domains: per_node %d: want 1 to %d (0: the default, %d)", cd.PerNode, records.MaxTallied, gateway.DefaultCustomPerNode)
		}
		if len(cd.Invites) > 0 && cd.Policy != gateway.CustomInvite {
			return fmt.Errorf("gateway: custom_domains: invites with policy %q (they are for the invite policy)", cd.Policy)
		}
		if cd.DNSServer != "" {
			if _, _, err := net.SplitHostPort(cd.DNSServer); err != nil {
				return fmt.Errorf("gateway: custom_domains: dns_server %q: %w", cd.DNSServer, err)
			}
		}
	}
	for _, d := range g.MeshOpen {
		if _, ok := g.OperatorKeys[d]; !ok {
			return fmt.Errorf("gateway: mesh_open lists %s, which has no operator key here (its record says it)", d)
		}
	}
	for d, m := range g.TLS {
		if _, ok := g.OperatorKeys[d]; !ok {
			return fmt.Errorf("gateway: tls for %s, which has no operator key here (its record says the mode)", d)
		}
		if err := records.ValidTLSMode(m); err != nil {
			return fmt.Errorf("gateway: tls for %s: %w", d, err)
		}
	}
	return nil
}

// operatorKeys loads the operator keys and checks each against the pinned
// operator of its domain.
func (g *GatewayConfig) operatorKeys(c *Config) (map[string]ed25519.PrivateKey, error) {
	trust, err := c.Trust()
	if err != nil {
		return nil, err
	}
	keys := map[string]ed25519.PrivateKey{}
	for d, file := range g.OperatorKeys {
		key, err := identity.LoadKeyFile(file)
		if err != nil {
			return nil, fmt.Errorf("gateway: operator key of %s: %w", d, err)
		}
		id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, err
		}
		if id != trust[d] {
			return nil, fmt.Errorf("gateway: operator key %s is %s, but domains pins %s for %s", file, id.DID(), trust[d].DID(), d)
		}
		keys[d] = key
	}
	return keys, nil
}

// delegations loads the delegation files and checks each against the
// pinned operator of its domain and this supernode's key.
func (g *GatewayConfig) delegations(c *Config, self identity.ID) (map[string]records.SignedDelegation, error) {
	trust, err := c.Trust()
	if err != nil {
		return nil, err
	}
	out := map[string]records.SignedDelegation{}
	for d, file := range g.Delegations {
		var sd records.SignedDelegation
		if err := config.Load(file, &sd); err != nil {
			return nil, fmt.Errorf("gateway: delegation of %s: %w", d, err)
		}
		del, err := records.ParseDelegation(sd)
		if err != nil {
			return nil, fmt.Errorf("gateway: delegation %s: %w", file, err)
		}
		switch {
		case del.Domain != d:
			return nil, fmt.Errorf("gateway: delegation %s is for %s, not %s", file, del.Domain, d)
		case del.Operator != trust[d]:
			return nil, fmt.Errorf("gateway: delegation %s is signed by %s, but domains pins %s for %s", file, del.Operator.DID(), trust[d].DID(), d)
		case del.Supernode != self:
			return nil, fmt.Errorf("gateway: delegation %s is to %s, not this supernode (%s)", file, del.Supernode.DID(), self.DID())
		case time.Now().Unix() >= del.Expires:
			return nil, fmt.Errorf("gateway: delegation %s expired at %s: ask the operator for a new one", file, time.Unix(del.Expires, 0).UTC().Format(time.RFC3339))
		}
		out[d] = sd
	}
	return out, nil
}

// startGateway runs the gateway and its names API; the returned func
// stops them.
func startGateway(cfg *Config, opts Options, node *dht.Node, key ed25519.PrivateKey, rel gateway.LocalRelay, gateways *dht.GatewaySet,
	relayCert *atomic.Pointer[func(*tls.ClientHelloInfo) (*tls.Certificate, error)], reg prometheus.Registerer, log *slog.Logger) (func(), error) {
	gc := cfg.Gateway
	gm, err := newGatewayMetrics(reg)
	if err != nil {
		return nil, err
	}
	keys, err := gc.operatorKeys(cfg)
	if err != nil {
		return nil, err
	}
	trust, err := cfg.Trust()
	if err != nil {
		return nil, err
	}
	var domains []string
	for _, d := range cfg.Domains {
		domains = append(domains, d.Domain)
	}
	self, _ := node.ID()
	dels, err := gc.delegations(cfg, self)
	if err != nil {
		return nil, err
	}
	custom, err := gc.CustomDomains.custom(node)
	if err != nil {
		return nil, err
	}
	var g *gateway.Gateway
	names, err := gateway.NewNames(gateway.NamesConfig{Custom: custom, Metrics: reg,
		Store: node, Operators: keys, Delegations: dels, Key: key, Policy: gc.Policy, Reserved: gc.Reserved,
		GrantTTL: time.Duration(gc.GrantTTL), RouteTTL: time.Duration(gc.RouteTTL),
		StateFile: filepath.Join(cfg.DataDir, "names.json"), Self: self, Logger: log,
		Changed: func(name string) { g.Forget(name) },
		Supernodes: func(ctx context.Context, domain string) []namesapi.SupernodeEntry {
			return domainSupernodes(ctx, node, gateways, trust, domain)
		},
	})
	if err != nil {
		return nil, err
	}
	var cm *certs.Manager // set before the gateway serves
	var mesh []string
	for _, d := range cfg.Mesh {
		mesh = append(mesh, d.Domain)
	}
	g, err = gateway.New(gateway.Config{Host: node.Host(), Resolver: node, Relay: rel, Domains: domains, API: names,
		Mesh: mesh, MeshOpen: gateways.MeshOpen, Custom: custom,
		Rate: rate.Limit(gc.RateLimit), Burst: gc.Burst, Logger: log, RelayWS: relayWS(node),
		OwnChallenge: func(name string) bool { return cm != nil && cm.Ordering(name) }})
	if err != nil {
		return nil, err
	}
	var stops []func()
	stop := func() {
		for _, f := range stops {
			f()
		}
	}
	var httpLn, httpsLn net.Listener
	if gc.HTTPListen != "" {
		if httpLn, err = listen(opts.GatewayHTTPListener, "tcp", gc.HTTPListen); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		stops = append(stops, func() { httpLn.Close() })
	}
	if gc.HTTPSListen != "" {
		if httpsLn, err = listen(opts.GatewayHTTPSListener, "tcp", gc.HTTPSListen); err != nil {
			stop()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		stops = append(stops, func() { httpsLn.Close() })
	}
	if httpsLn != nil {
		if cm, err = newCerts(gc, cfg, g, httpLn, httpsLn, log); err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, cm.Close)
		getCert := cm.TLSConfig().GetCertificate
		relayCert.Store(&getCert)
		srv := g.Server()
		srv.Handler = gm.wrap("https", srv.Handler)
		// Port 443 goes through the gateway's SNI router: names whose
		// node holds its own certificate are spliced to it, relay.<domain>
		// goes to the libp2p WebSocket listener, the rest to this
		// server's TLS.
		go g.ServeTLS(httpsLn, cm.TLSConfig(), srv)
		stops = append(stops, func() { srv.Close() })
		log.Info("web gateway (HTTPS)", "addr", httpsLn.Addr().String(), "wildcard", gc.ACME.DNS != nil)
		if gc.ACME.DNS != nil {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				if err := cm.Manage(ctx, domains); err != nil {
					log.Error("wildcard certificates not ready; retrying in the background", "err", err)
				}
			}()
		}
	}
	if httpLn != nil {
		srv := g.Server()
		if cm != nil {
			// Port 80: ACME challenges, and a redirect to HTTPS; a
			// name's ?status is answered here too, as the gateway
			// cannot see it over HTTPS when the name is end to end.
			redirect := cm.HTTPHandler(g)
			srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, status := r.URL.Query()["status"]; status && r.Method == http.MethodGet {
					g.ServeHTTP(w, r)
					return
				}
				redirect.ServeHTTP(w, r)
			})
		}
		srv.Handler = gm.wrap("http", srv.Handler)
		go srv.Serve(httpLn)
		stops = append(stops, func() { srv.Close() })
		log.Info("web gateway (HTTP)", "addr", httpLn.Addr().String(), "redirects_to_https", cm != nil)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	stops = append(stops, lcancel)
	for d, key := range keys {
		open := slices.Contains(gc.MeshOpen, d)
		go keepListed(lctx, node, d, dht.DomainOptions{TLS: gc.TLS[d], Mesh: &open}, key, len(cfg.Bootstrap) > 0, log)
	}
	log.Info("web gateway up", "domains", domains, "grants_for", len(keys))
	return stop, nil
}

// domainSupernodes is GET /api/supernodes: this supernode and the
// others domain's record lists, with full multiaddrs.
func domainSupernodes(ctx context.Context, node *dht.Node, gateways *dht.GatewaySet, trust records.TrustMap, domain string) []namesapi.SupernodeEntry {
	self, _ := node.ID()
	var out []namesapi.SupernodeEntry
	d := domain
	add := func(id identity.ID, addrs []string) {
		if len(addrs) == 0 || slices.ContainsFunc(out, func(e namesapi.SupernodeEntry) bool { return e.DID == id.DID() }) {
			return
		}
		pid, err := dht.IDToPeer(id)
		if err != nil {
			return
		}
		e := namesapi.SupernodeEntry{DID: id.DID(), Domain: d, Operator: trust[d].DID()}
		for _, a := range addrs {
			m, err := ma.NewMultiaddr(a)
			if err != nil {
				continue
			}
			if _, err := m.ValueForProtocol(ma.P_P2P); err != nil {
				m = m.Encapsulate(ma.StringCast("/p2p/" + pid.String()))
			}
			e.Addrs = append(e.Addrs, m.String())
		}
		out = append(out, e)
	}
	var own []string
	for _, a := range node.Multiaddrs() {
		own = append(own, a.String())
	}
	add(self, own)
	listed := gateways.Listed(ctx)
	for _, p := range listed[domain] {
		add(p.ID, p.Addrs)
	}
	// Then the mesh's other operators' supernodes, by domain.
	others := make([]string, 0, len(listed))
	for o := range listed {
		if o != domain && trust[o] != trust[domain] {
			others = append(others, o)
		}
	}
	slices.Sort(others)
	for _, o := range others {
		d = o
		for _, p := range listed[o] {
			add(p.ID, p.Addrs)
		}
	}
	return out
}

// keepListed keeps this supernode listed as a gateway in the record of
// domain, whose operator key it holds (dht.Node.ListGateway): at start
// (retried every 30 s until it works), then hourly.
func keepListed(ctx context.Context, node *dht.Node, domain string, o dht.DomainOptions, key ed25519.PrivateKey, joining bool, log *slog.Logger) {
	// A supernode that joins others lists itself once it has: before,
	// it reads no record (and would start a new list without the
	// others) and its record reaches no one (the domain's other gateways
	// would not trust it for an hour). Not forever: a network whose
	// other supernodes are all down still gets this one listed.
	for end := time.Now().Add(time.Minute); joining && node.DHT().RoutingTable().Size() == 0 && time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The domain's supernodes often start together (joining when the
	// first of them is up): a moment of each one's own makes two of
	// them listing themselves from the same old record unlikely.
	wait := time.Duration(0)
	if joining {
		wait = rand.N(3 * time.Second)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		published, err := node.ListGatewayWith(pctx, domain, o, key)
		cancel()
		switch {
		case err != nil:
			log.Warn("cannot list this gateway in the domain record; retrying", "domain", domain, "err", err)
			wait = 30 * time.Second
			continue
		case published:
			log.Info("listed this gateway in the domain record", "domain", domain)
			// Another supernode of the domain may have listed itself at
			// the same moment from the same old record: one of the two
			// listings is lost. Look again soon, at a moment of its own
			// (supernodes started together would race again).
			wait = time.Minute + rand.N(30*time.Second)
			continue
		}
		wait = time.Hour
	}
}

// newCerts builds the certificate manager of gc, on demand for the names
// g allows; the challenges are served on httpLn (nil: none) and httpsLn.
func newCerts(gc *GatewayConfig, cfg *Config, g *gateway.Gateway, httpLn, httpsLn net.Listener, log *slog.Logger) (*certs.Manager, error) {
	cc := certs.Config{CA: gc.ACME.CA, Email: gc.ACME.Email, Dir: filepath.Join(cfg.DataDir, "certs"),
		Allow: g.Allowed, DNS: gc.ACME.DNS, TLSALPNPort: portOf(httpsLn), DisableHTTP01: httpLn == nil,
		Logger: log.With("part", "certs")}
	if httpLn != nil {
		cc.HTTPPort = portOf(httpLn)
	}
	roots, err := certs.Roots(gc.ACME.CARoot, gc.ACME.CARootFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: acme: %w", err)
	}
	cc.CARoots = roots
	cm, err := certs.New(cc)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return cm, nil
}

// relayWS is the address of node's secure WebSocket listener on loopback
// ("": none), for the gateway's relay.<domain>.
func relayWS(node *dht.Node) string {
	for _, a := range node.Host().Network().ListenAddresses() {
		if !dht.IsWebSocket(a) {
			continue
		}
		if na, err := manet.ToNetAddr(a.Decapsulate(ma.StringCast("/tls/ws"))); err == nil {
			return na.String()
		}
	}
	return ""
}

// portOf is the TCP port ln listens on.
func portOf(ln net.Listener) int {
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}
