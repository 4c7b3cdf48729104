package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/customdomain"
)

// Owners' own domains (issue 20). A request for a host under no domain
// this gateway serves or trusts is an owner's domain when the gateway
// takes them (Config.Custom): its DNS TXT record at _pc2.<host> must
// hold a proof signed by a DID (customdomain.Verify), and the operator's
// policy must admit that DID; the host is then routed to the DID's node
// exactly as a name is (the same cache: a removed or replaced proof
// stops it within CacheTTL), and may get an on-demand certificate
// (Allowed), as the host's DNS points here.

// Custom-domain policies (Custom.Policy).
const (
	CustomOpen      = "open"      // any DID with a proof
	CustomAllowlist = "allowlist" // the DIDs in Custom.Allow
)

// DefaultCustomPerNode is how many custom domains one DID may have
// served by a gateway.
const DefaultCustomPerNode = 3

// Custom configures owners' own domains.
type Custom struct {
	// Policy is CustomOpen or CustomAllowlist.
	Policy string
	Allow  []identity.ID
	// PerNode bounds the custom domains served for one DID (<= 0:
	// DefaultCustomPerNode).
	PerNode int
	// LookupTXT reads a DNS name's TXT strings (default: the system's
	// resolver); it must wrap ErrNoRecord when the name has none.
	LookupTXT func(ctx context.Context, name string) ([]string, error)
	// ResolveDID finds a DID's record (dht.Node.ResolveDID). Required.
	ResolveDID func(ctx context.Context, id identity.ID) (*records.DID, error)

	mu    sync.Mutex
	hosts map[identity.ID][]string // custom hosts served per DID
}

// ErrNoRecord is what Custom.LookupTXT returns for a name without TXT
// records.
var ErrNoRecord = errors.New("gateway: no such DNS record")

// LookupTXTWith returns a LookupTXT that asks the DNS server at addr
// ("" for the system's resolver).
func LookupTXTWith(addr string) func(ctx context.Context, name string) ([]string, error) {
	r := net.DefaultResolver
	if addr != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		}}
	}
	return func(ctx context.Context, name string) ([]string, error) {
		txts, err := r.LookupTXT(ctx, name)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, fmt.Errorf("%w: %v", ErrNoRecord, err)
		}
		return txts, err
	}
}

// isCustom reports whether host is an owner's domain here: custom
// domains are on and host is under no served or trusted domain.
func (g *Gateway) isCustom(host string) bool {
	if g.cfg.Custom == nil {
		return false
	}
	if _, _, ok := g.split(host); ok {
		return false
	}
	_, _, ok := splitUnder(host, g.cfg.Mesh)
	return !ok
}

// resolveCustom resolves an owner's domain to its node, as ResolveName
// does a name: a resolution whose grant is a stand-in (the host, the
// DID, active while the proof is); dht.ErrNotFound when there is no
// valid proof or the policy refuses the DID.
func (g *Gateway) resolveCustom(ctx context.Context, host string) (*dht.NameResolution, error) {
	c := g.cfg.Custom
	if err := customdomain.Check(host); err != nil {
		return nil, fmt.Errorf("%w: %v", dht.ErrNotFound, err)
	}
	txts, err := c.LookupTXT(ctx, customdomain.TXTName(host))
	switch {
	case errors.Is(err, ErrNoRecord):
		return nil, fmt.Errorf("%w: %s has no proof", dht.ErrNotFound, host)
	case err != nil:
		return nil, fmt.Errorf("custom domain %s: %w", host, err)
	}
	id, err := customdomain.Verify(txts, host)
	if err != nil {
		g.log.Info("custom domain refused", "host", host, "err", err)
		return nil, fmt.Errorf("%w: %v", dht.ErrNotFound, err)
	}
	if c.Policy == CustomAllowlist && !slices.Contains(c.Allow, id) {
		g.log.Info("custom domain refused: the DID is not on the allowlist", "host", host, "did", id.DID())
		return nil, fmt.Errorf("%w: %s may not use custom domains here", dht.ErrNotFound, id.DID())
	}
	if !c.admit(id, host) {
		g.log.Info("custom domain refused: the DID has its share", "host", host, "did", id.DID())
		return nil, fmt.Errorf("%w: %s has its share of custom domains here", dht.ErrNotFound, id.DID())
	}
	d, err := c.ResolveDID(ctx, id)
	if err != nil && !errors.Is(err, dht.ErrNotFound) {
		return nil, fmt.Errorf("custom domain %s: %w", host, err)
	}
	now := g.cfg.Now()
	res := &dht.NameResolution{Name: &records.Name{Grant: records.Grant{Version: records.Version, Name: host, DID: id,
		Status: records.StatusActive, IssuedAt: now.Unix(), Expires: now.Add(24 * time.Hour).Unix()}}, DID: d}
	if err != nil {
		res.DIDError = err.Error()
	}
	return res, nil
}

// admit counts host among id's custom domains, up to PerNode.
func (c *Custom) admit(id identity.ID, host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosts == nil {
		c.hosts = map[identity.ID][]string{}
	}
	hs := c.hosts[id]
	if slices.Contains(hs, host) {
		return true
	}
	limit := c.PerNode
	if limit <= 0 {
		limit = DefaultCustomPerNode
	}
	if len(hs) >= limit {
		return false
	}
	c.hosts[id] = append(hs, host)
	return true
}
