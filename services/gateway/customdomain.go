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
	// CustomInvite: hosts registered with an invite code at one of the
	// operator's granting supernodes (POST /api/hosts), which lists them
	// in the DID's tally (records.TallyHosts), shared by the operator's
	// gateways.
	CustomInvite = "invite"
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
	// Invites are the codes of CustomInvite, each good for one host.
	Invites []string
	// Tally reads a domain's tally (dht.Node.CurrentTally; required with
	// CustomInvite): the hosts registered for a DID.
	Tally func(ctx context.Context, domain, subject string) (*records.Tally, error)

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
			return nil, fmt.Errorf("%w: %w", ErrNoRecord, err)
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
	id, err := c.proof(ctx, host)
	switch {
	case errors.Is(err, ErrNoRecord):
		return nil, fmt.Errorf("%w: %s has no proof", dht.ErrNotFound, host)
	case customdomain.Refused(err):
		g.log.Info("custom domain refused", "host", host, "err", err)
		return nil, fmt.Errorf("%w: %v", dht.ErrNotFound, err)
	case err != nil:
		return nil, fmt.Errorf("custom domain %s: %w", host, err)
	}
	switch c.Policy {
	case CustomAllowlist:
		if !slices.Contains(c.Allow, id) {
			g.log.Info("custom domain refused: the DID is not on the allowlist", "host", host, "did", id.DID())
			return nil, fmt.Errorf("%w: %s may not use custom domains here", dht.ErrNotFound, id.DID())
		}
	case CustomInvite:
		// The shared tally bounds the hosts per DID: no count here.
		ok, err := c.registered(ctx, g.cfg.Domains, id, host)
		switch {
		case err != nil:
			return nil, fmt.Errorf("custom domain %s: %w", host, err)
		case !ok:
			g.log.Info("custom domain refused: not registered", "host", host, "did", id.DID())
			return nil, fmt.Errorf("%w: %s is not registered here (the owner registers it with an invite code)", dht.ErrNotFound, host)
		}
	}
	if c.Policy != CustomInvite && !c.admit(id, host) {
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

// registered reports whether one of domains' tallies lists host among
// id's hosts, unexpired.
func (c *Custom) registered(ctx context.Context, domains []string, id identity.ID, host string) (bool, error) {
	var errs []error
	for _, d := range domains {
		t, err := c.Tally(ctx, d, records.TallyHosts+id.String())
		switch {
		case errors.Is(err, dht.ErrNotFound):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if slices.ContainsFunc(t.Live(time.Now().Unix()), func(n records.TalliedName) bool { return n.Name == host }) {
			return true, nil
		}
	}
	return false, errors.Join(errs...)
}

// perNode is PerNode or its default.
func (c *Custom) perNode() int {
	if c.PerNode <= 0 {
		return DefaultCustomPerNode
	}
	return c.PerNode
}

// proof reads host's proof from DNS and returns the DID it names.
func (c *Custom) proof(ctx context.Context, host string) (identity.ID, error) {
	txts, err := c.LookupTXT(ctx, customdomain.TXTName(host))
	if err != nil {
		return identity.ID{}, err
	}
	return customdomain.Verify(txts, host)
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
	if len(hs) >= c.perNode() {
		return false
	}
	c.hosts[id] = append(hs, host)
	return true
}
