package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// ErrOperatorMismatch means a name's grant was signed by a key other than
// the one the domain record names.
var ErrOperatorMismatch = errors.New("dht: name grant not signed by the domain's operator")

// ResolveDID finds and verifies id's did record.
func (n *Node) ResolveDID(ctx context.Context, id identity.ID) (*records.DID, error) {
	key := records.DIDKey(id)
	val, err := n.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", id.DID(), err)
	}
	d, err := n.validator.ParseDID(key, val)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", id.DID(), err)
	}
	return d, nil
}

// ResolveBackup finds and verifies id's backup record (its location is
// sealed: only the identity's words open it).
func (n *Node) ResolveBackup(ctx context.Context, id identity.ID) (*records.Backup, error) {
	key := records.BackupKey(id)
	val, err := n.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("resolve the backup record of %s: %w", id.DID(), err)
	}
	b, err := n.validator.ParseBackup(key, val)
	if err != nil {
		return nil, fmt.Errorf("resolve the backup record of %s: %w", id.DID(), err)
	}
	return b, nil
}

// ResolveDomain finds and verifies a domain record.
func (n *Node) ResolveDomain(ctx context.Context, domain string) (*records.Domain, error) {
	if err := records.ValidDomain(domain); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", domain, err)
	}
	key := records.DomainKey(domain)
	val, err := n.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("resolve domain %s: %w", domain, err)
	}
	d, err := n.validator.ParseDomain(key, val)
	if err != nil {
		return nil, fmt.Errorf("resolve domain %s: %w", domain, err)
	}
	return d, nil
}

// NameResolution is a name resolved as far as it goes: the name record,
// the domain record that vouches for its operator, and (when the name is
// active and the holder has published one) the holder's did record.
type NameResolution struct {
	Name   *records.Name   `json:"name"`
	Domain *records.Domain `json:"domain,omitempty"`
	DID    *records.DID    `json:"did,omitempty"`
	// DIDError says why DID is missing for an active name.
	DIDError string `json:"did_error,omitempty"`
}

// ResolveName resolves a fully qualified name and checks that its grant is
// signed by the operator the domain record (or this node's trust list)
// names.
func (n *Node) ResolveName(ctx context.Context, fqdn string) (*NameResolution, error) {
	_, domain, err := records.SplitName(fqdn)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", fqdn, err)
	}
	key := records.NameKey(fqdn)
	val, err := n.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", fqdn, err)
	}
	name, err := n.validator.ParseName(key, val)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", fqdn, err)
	}
	res := &NameResolution{Name: name}
	dom, derr := n.ResolveDomain(ctx, domain)
	pinned := false
	if n.cfg.Trust != nil {
		_, pinned = n.cfg.Trust.Operator(domain)
	}
	switch {
	case derr == nil:
		if dom.Operator != name.Grant.Operator {
			return nil, fmt.Errorf("resolve %s: %w: grant by %s, domain governed by %s", fqdn, ErrOperatorMismatch, name.Grant.Operator.DID(), dom.Operator.DID())
		}
		res.Domain = dom
	case !pinned:
		// Without a pinned operator, only the domain record can vouch.
		return nil, fmt.Errorf("resolve %s: cannot verify the operator: %w", fqdn, derr)
	}
	if name.Grant.Status == records.StatusActive {
		d, err := n.ResolveDID(ctx, name.Grant.DID)
		if err != nil {
			res.DIDError = err.Error()
		} else {
			res.DID = d
		}
	}
	return res, nil
}

// CurrentSeq returns the seq of the best valid record stored under key, or
// 0 when there is none.
func (n *Node) CurrentSeq(ctx context.Context, key string) (uint64, error) {
	val, err := n.GetNewest(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	rec, err := n.validator.Parse(key, val)
	if err != nil {
		return 0, nil // nothing valid stored: start afresh
	}
	seq, _, err := records.SeqOf(rec)
	if err != nil {
		return 0, fmt.Errorf("current seq of %s: %w", key, err)
	}
	return seq, nil
}

// CurrentName returns the newest valid name record of fqdn in the network
// (a full lookup, like CurrentSeq), for the operator deciding on a claim.
// It does not resolve the holder's did record.
func (n *Node) CurrentName(ctx context.Context, fqdn string) (*records.Name, error) {
	if _, _, err := records.SplitName(fqdn); err != nil {
		return nil, fmt.Errorf("name %s: %w", fqdn, err)
	}
	key := records.NameKey(fqdn)
	val, err := n.GetNewest(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("name %s: %w", fqdn, err)
	}
	name, err := n.validator.ParseName(key, val)
	if err != nil {
		return nil, fmt.Errorf("name %s: %w", fqdn, err)
	}
	return name, nil
}

// CurrentTally returns the newest valid tally of domain's subject
// (records.Tally; a full lookup), or an error wrapping ErrNotFound.
func (n *Node) CurrentTally(ctx context.Context, domain, subject string) (*records.Tally, error) {
	key := records.TallyKey(domain, subject)
	val, err := n.GetNewest(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("tally %s/%s: %w", domain, subject, err)
	}
	t, err := n.validator.ParseTally(key, val)
	if err != nil {
		return nil, fmt.Errorf("tally %s/%s: %w", domain, subject, err)
	}
	return t, nil
}

// RevokeName takes fqdn back from its holder with the domain's operator
// key: it publishes the next record of the holder's holding, with status
// revoked and reason (shown to the holder), lasting ttl. It beats every
// grant of that holding (records.Beats) wherever it arrives. It returns
// the revoked grant (the holder's) and where the revocation went.
func (n *Node) RevokeName(ctx context.Context, fqdn string, operator ed25519.PrivateKey, reason string, ttl time.Duration) (*records.Grant, PutResult, error) {
	opID, err := identity.IDFromPublicKey(operator.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, PutResult{}, err
	}
	cur, err := n.CurrentName(ctx, fqdn)
	if err != nil {
		return nil, PutResult{}, fmt.Errorf("revoke %s: %w", fqdn, err)
	}
	g := cur.Grant
	switch {
	case g.Operator != opID:
		return nil, PutResult{}, fmt.Errorf("revoke %s: its grant is from operator %s, not %s", fqdn, g.Operator.DID(), opID.DID())
	case g.Status == records.StatusRevoked:
		return nil, PutResult{}, fmt.Errorf("revoke %s: already revoked (%s)", fqdn, g.Reason)
	}
	now := n.cfg.now()
	rev := records.Grant{Version: records.Version, Name: fqdn, DID: g.DID, Seq: NextSeq(g.Seq, now), Status: records.StatusRevoked,
		IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), Operator: opID, Since: g.HoldingSince(), After: g.After, Reason: reason}
	val, err := records.SignGrant(operator, &rev, nil)
	if err != nil {
		return nil, PutResult{}, err
	}
	res, err := n.PutVerified(ctx, records.NameKey(fqdn), val)
	if err != nil {
		return nil, res, fmt.Errorf("revoke %s: %w", fqdn, err)
	}
	return &g, res, nil
}
