package supernode

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"golang.org/x/time/rate"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/gateway"
	"github.com/pc2/pc2/services/relay"
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
	// Policy says who may claim new names (open, invite, allowlist).
	Policy gateway.Policy `json:"policy,omitempty"`
	// Reserved are labels nobody may claim, on top of the built-in list.
	Reserved []string `json:"reserved,omitempty"`
	// RateLimit and Burst limit requests per client IP per second (0:
	// the gateway's defaults).
	RateLimit float64 `json:"rate_limit,omitempty"`
	Burst     int     `json:"burst,omitempty"`
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
	trust, err := c.Trust()
	if err != nil {
		return err
	}
	for d := range g.OperatorKeys {
		if _, ok := trust[d]; !ok {
			return fmt.Errorf("gateway: operator key for %s, which is not in domains", d)
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

// startGateway runs the gateway and its names API; the returned func
// stops them.
func startGateway(cfg *Config, opts Options, node *dht.Node, rel *relay.Relay, log *slog.Logger) (func(), error) {
	gc := cfg.Gateway
	keys, err := gc.operatorKeys(cfg)
	if err != nil {
		return nil, err
	}
	var domains []string
	for _, d := range cfg.Domains {
		domains = append(domains, d.Domain)
	}
	self, _ := node.ID()
	var g *gateway.Gateway
	names, err := gateway.NewNames(gateway.NamesConfig{
		Store: node, Operators: keys, Policy: gc.Policy, Reserved: gc.Reserved,
		StateFile: filepath.Join(cfg.DataDir, "names.json"), Self: self, Logger: log,
		Changed: func(name string) { g.Forget(name) },
	})
	if err != nil {
		return nil, err
	}
	g, err = gateway.New(gateway.Config{Host: node.Host(), Resolver: node, Relay: rel, Domains: domains, API: names,
		Rate: rate.Limit(gc.RateLimit), Burst: gc.Burst, Logger: log})
	if err != nil {
		return nil, err
	}
	ln, err := listen(opts.GatewayHTTPListener, gc.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	srv := g.Server()
	go srv.Serve(ln)
	log.Info("web gateway", "http", ln.Addr().String(), "domains", domains, "grants_for", len(keys))
	return func() { srv.Close() }, nil
}

// listen returns ln if set, else a listener on addr.
func listen(ln net.Listener, addr string) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}
	return net.Listen("tcp", addr)
}
