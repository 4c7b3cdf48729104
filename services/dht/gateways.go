package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// Gateway set defaults.
const (
	// DefaultGatewaysMaxAge is how long a resolved gateway list is used
	// before it is resolved again.
	DefaultGatewaysMaxAge = 10 * time.Minute
	// DefaultGatewaysMinRefresh is the least time between two
	// resolutions: a stranger's streams cannot make the set look the
	// domain records up more often than this.
	DefaultGatewaysMinRefresh = 10 * time.Second
)

// GatewaysConfig configures a GatewaySet.
type GatewaysConfig struct {
	// Resolve finds a domain's verified record (Node.ResolveDomain).
	Resolve func(ctx context.Context, domain string) (*records.Domain, error)
	// Domains are the domains whose gateways are trusted, asked at every
	// resolution (a node's claimed name may change).
	Domains func() []string
	// Static peers are always trusted (a node's own supernodes).
	Static []peer.ID
	// Operator, if set, pins each domain's operator: a domain record by
	// another key is ignored, and a domain without a pin is not trusted
	// at all. A client node, whose validator takes any self-consistent
	// record (AllowUnknownDomains), needs it; a supernode's validator
	// pins its domains already.
	Operator func(domain string) (identity.ID, bool)
	// MaxAge and MinRefresh: see the defaults.
	MaxAge, MinRefresh time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// GatewaySet answers whether a peer is a gateway of one of some domains,
// as the domains' operators list them in their signed domain records
// (records.Domain.Gateways), plus a static list. Only these peers may hand
// a node HTTP streams carrying client addresses (X-Forwarded-For), so
// only they can spend the per-address login attempts of someone else.
//
// The records are resolved lazily: when the last resolution is older
// than MaxAge, or when an unknown peer asks and the last resolution is
// older than MinRefresh (a gateway just added to the record is trusted
// within that). A domain whose record cannot be resolved keeps the
// gateways it last had.
type GatewaySet struct {
	cfg    GatewaysConfig
	static map[peer.ID]bool

	mu       sync.Mutex
	byDomain map[string][]peer.ID // in the record's order
	listed   map[string][]records.Peer
	tlsModes map[string]string // the records' TLS modes
	mesh     map[string]bool   // the records' Mesh
	fetched  time.Time         // the last resolution's start (zero: never)
	running  chan struct{}     // closed when the running resolution ends
}

// NewGatewaySet returns a set resolving with cfg.Resolve.
func NewGatewaySet(cfg GatewaysConfig) (*GatewaySet, error) {
	if cfg.Resolve == nil || cfg.Domains == nil {
		return nil, errors.New("dht: gateway set needs Resolve and Domains")
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultGatewaysMaxAge
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = DefaultGatewaysMinRefresh
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &GatewaySet{cfg: cfg, static: map[peer.ID]bool{}, byDomain: map[string][]peer.ID{}, tlsModes: map[string]string{},
		listed: map[string][]records.Peer{}, mesh: map[string]bool{}}
	for _, p := range cfg.Static {
		s.static[p] = true
	}
	return s, nil
}

// Allowed reports whether p is a trusted gateway, resolving the domain
// records first when they are due (bounded by ctx).
func (s *GatewaySet) Allowed(ctx context.Context, p peer.ID) bool {
	if s.static[p] {
		return true
	}
	s.mu.Lock()
	known := s.has(p)
	s.mu.Unlock()
	s.refresh(ctx, func(age time.Duration) bool { return !known && age >= s.cfg.MinRefresh })
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.has(p)
}

// Listed returns, by domain, the gateways (the domain's supernodes) its
// record lists with their addresses, resolving the records first when
// the last resolution is older than MinRefresh (bounded by ctx): what a
// node discovers supernodes from.
func (s *GatewaySet) Listed(ctx context.Context) map[string][]records.Peer {
	// Answers are at most MinRefresh old (what a caller, such as a
	// visitor of /api/supernodes, can make the set resolve).
	s.refresh(ctx, func(age time.Duration) bool { return age >= s.cfg.MinRefresh })
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]records.Peer, len(s.listed))
	for d, ps := range s.listed {
		out[d] = slices.Clone(ps)
	}
	return out
}

// MeshOpen reports whether domain's record lets other operators'
// gateways serve its names (records.Domain.Mesh).
func (s *GatewaySet) MeshOpen(ctx context.Context, domain string) bool {
	s.mu.Lock()
	open := s.mesh[domain]
	s.mu.Unlock()
	// A domain just opened is seen within MinRefresh (what a visitor's
	// requests can make the set resolve).
	s.refresh(ctx, func(age time.Duration) bool { return !open && age >= s.cfg.MinRefresh })
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mesh[domain]
}

// TLSMode is the TLS mode domain's record states (records.Domain.TLS);
// false when no record of the domain was resolved.
func (s *GatewaySet) TLSMode(ctx context.Context, domain string) (string, bool) {
	s.mu.Lock()
	_, known := s.tlsModes[domain]
	s.mu.Unlock()
	// A record not resolved yet (published after this set first looked)
	// is looked for again after MinRefresh, not MaxAge.
	s.refresh(ctx, func(age time.Duration) bool { return !known && age >= s.cfg.MinRefresh })
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.tlsModes[domain]
	return m, ok
}

// refresh resolves the records (or waits, within ctx, for the resolution
// running) when the last one is older than MaxAge, or when early says so
// of its age.
func (s *GatewaySet) refresh(ctx context.Context, early func(age time.Duration) bool) {
	s.mu.Lock()
	age := s.cfg.Now().Sub(s.fetched)
	if !s.fetched.IsZero() && age < s.cfg.MaxAge && !early(age) {
		s.mu.Unlock()
		return
	}
	done := s.running
	if done == nil {
		done = make(chan struct{})
		s.running = done
		s.fetched = s.cfg.Now()
		go s.resolve(done)
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// pinned reports d's pinned operator; true without pins.
func (s *GatewaySet) pinned(d string) (identity.ID, bool) {
	if s.cfg.Operator == nil {
		return identity.ID{}, true
	}
	return s.cfg.Operator(d)
}

// has reports whether a resolved record lists p; s.mu is held.
func (s *GatewaySet) has(p peer.ID) bool {
	for _, ids := range s.byDomain {
		if slices.Contains(ids, p) {
			return true
		}
	}
	return false
}

// resolve looks every domain's record up (in the background: it outlives
// the stream that started it) and closes done.
func (s *GatewaySet) resolve(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	domains := s.cfg.Domains()
	found := map[string][]peer.ID{}
	peers := map[string][]records.Peer{}
	modes := map[string]string{}
	mesh := map[string]bool{}
	for _, d := range domains {
		op, ok := s.pinned(d)
		if !ok {
			continue
		}
		rec, err := s.cfg.Resolve(ctx, d)
		if err != nil {
			s.cfg.Logger.Debug("gateways of a domain not resolved", "domain", d, "err", err)
			continue
		}
		if s.cfg.Operator != nil && rec.Operator != op {
			s.cfg.Logger.Warn("a domain record by another operator ignored", "domain", d, "operator", rec.Operator.DID(), "pinned", op.DID())
			continue
		}
		var ids []peer.ID
		for _, g := range rec.Gateways {
			if pid, err := IDToPeer(g.ID); err == nil {
				ids = append(ids, pid)
			}
		}
		found[d] = ids
		peers[d] = rec.Gateways
		modes[d] = rec.TLS
		mesh[d] = rec.Mesh
	}
	s.mu.Lock()
	keep := map[string][]peer.ID{}
	keepPeers := map[string][]records.Peer{}
	keepModes := map[string]string{}
	keepMesh := map[string]bool{}
	for _, d := range domains {
		if ids, ok := found[d]; ok {
			keep[d], keepPeers[d], keepModes[d], keepMesh[d] = ids, peers[d], modes[d], mesh[d]
		} else if _, pinned := s.pinned(d); pinned {
			if old, ok := s.byDomain[d]; ok {
				keep[d], keepPeers[d], keepMesh[d] = old, s.listed[d], s.mesh[d]
			}
			if old, ok := s.tlsModes[d]; ok {
				keepModes[d] = old
			}
		}
	}
	s.byDomain, s.listed, s.tlsModes, s.mesh = keep, keepPeers, keepModes, keepMesh
	s.running = nil
	s.mu.Unlock()
	close(done)
}

// DomainListTTL is the lifetime of the domain records a supernode
// publishes to list itself (ListGateway); it renews them at half of it.
const DomainListTTL = 30 * 24 * time.Hour

// ListGateway makes sure domain's record lists this node as a gateway
// with its current addresses, publishing a new record signed by the
// domain's operator key when it does not (or when it is past half its
// life), with tlsMode as the domain's TLS mode (records.Domain.TLS;
// "auto" is records.TLSAuto; "" keeps the record's, auto for a new one).
// The other gateways listed stay. It reports whether it
// published. Supernodes holding a domain's operator key call it, so the
// gateways of an operator's supernodes find each other (GatewaySet)
// without a hand-made record.
func (n *Node) ListGateway(ctx context.Context, domain, tlsMode string, operator ed25519.PrivateKey) (bool, error) {
	return n.ListGatewayWith(ctx, domain, DomainOptions{TLS: tlsMode}, operator)
}

// DomainOptions are what a supernode holding the operator key states in
// the domain record besides the gateways: its TLS mode (as for
// ListGateway) and, unless Mesh is nil, whether other operators'
// gateways may serve its names (records.Domain.Mesh; nil keeps the
// record's).
type DomainOptions struct {
	TLS  string
	Mesh *bool
}

// ListGatewayWith is ListGateway with the record's options.
func (n *Node) ListGatewayWith(ctx context.Context, domain string, o DomainOptions, operator ed25519.PrivateKey) (bool, error) {
	selfID, err := n.ID()
	if err != nil {
		return false, err
	}
	var addrs []string
	for _, a := range n.Multiaddrs() {
		if len(addrs) < 8 { // within the validator's bound
			addrs = append(addrs, a.String())
		}
	}
	return n.ListPeer(ctx, domain, records.Peer{ID: selfID, Addrs: addrs}, o, operator)
}

// ListPeer is ListGatewayWith for another supernode, p: the operator's
// tool lists a supernode it delegated (pc2 operator delegate), which
// holds no operator key to list itself.
func (n *Node) ListPeer(ctx context.Context, domain string, p records.Peer, o DomainOptions, operator ed25519.PrivateKey) (bool, error) {
	tlsMode := o.TLS
	if err := records.ValidTLSMode(tlsMode); err != nil {
		return false, fmt.Errorf("list gateway of %s: %w", domain, err)
	}
	keepMode := tlsMode == ""
	if tlsMode == "auto" {
		tlsMode = records.TLSAuto
	}
	selfID, addrs := p.ID, p.Addrs
	opID, err := identity.IDFromPublicKey(operator.Public().(ed25519.PublicKey))
	if err != nil {
		return false, fmt.Errorf("list gateway of %s: %w", domain, err)
	}
	key := records.DomainKey(domain)
	old := &records.Domain{}
	val, err := n.GetNewest(ctx, key)
	switch {
	case err == nil:
		if old, err = n.validator.ParseDomain(key, val); err != nil {
			old = &records.Domain{} // nothing valid stored: start afresh
		}
	case errors.Is(err, ErrNotFound):
	default:
		return false, fmt.Errorf("list gateway of %s: %w", domain, err)
	}
	if keepMode && old.Operator == opID {
		tlsMode = old.TLS
	}
	mesh := old.Mesh && old.Operator == opID
	if o.Mesh != nil {
		mesh = *o.Mesh
	}
	now := n.cfg.now()
	others := make([]records.Peer, 0, len(old.Gateways)+1)
	listed := false
	for _, g := range old.Gateways {
		if g.ID == selfID {
			listed = slices.Equal(g.Addrs, addrs)
			continue
		}
		others = append(others, g)
	}
	if old.Operator == opID && listed && old.TLS == tlsMode && old.Mesh == mesh && now.Add(DomainListTTL/2).Unix() < old.Expires {
		return false, nil
	}
	if old.Operator != opID {
		others = others[:0] // another operator's list is not ours to keep
	}
	// The validator bounds the list: the oldest entries give way.
	others = append(others, records.Peer{ID: selfID, Addrs: addrs})
	if over := len(others) - records.MaxGateways; over > 0 {
		others = others[over:]
	}
	rec := &records.Domain{Version: records.Version, Domain: domain, Operator: opID, Seq: old.Seq + 1,
		IssuedAt: now.Unix(), Expires: now.Add(DomainListTTL).Unix(), Gateways: others, TLS: tlsMode, Mesh: mesh}
	signed, err := records.SignDomain(operator, rec)
	if err != nil {
		return false, fmt.Errorf("list gateway of %s: %w", domain, err)
	}
	if _, err := n.PutVerified(ctx, key, signed); err != nil {
		return false, fmt.Errorf("list gateway of %s: %w", domain, err)
	}
	return true, nil
}
