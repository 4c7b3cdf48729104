package records

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	record "github.com/libp2p/go-libp2p-record"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/pc2/pc2/provisioning/identity"
)

// Lifetime bounds per kind: a record must be re-signed (with a higher seq)
// before it expires, so a lost key or a dead node disappears by itself.
const (
	MaxDIDLifetime    = 7 * 24 * time.Hour
	MaxNameLifetime   = 400 * 24 * time.Hour
	MaxDomainLifetime = 400 * 24 * time.Hour
	// A backup record must outlive a dead device long enough for its
	// owner to restore on a new one.
	MaxBackupLifetime = 400 * 24 * time.Hour
	// DefaultClockSkew is how far in the future issued-at may lie.
	DefaultClockSkew = 5 * time.Minute
)

// Entry-count bounds, checked on top of MaxRecordSize.
const (
	maxAddrs    = 16
	maxPeers    = 8
	maxGateways = 16
	maxNames    = 16
	maxServices = 16
	maxString   = 256
	// MaxSealed bounds a backup record's sealed location.
	MaxSealed = 2560
)

// MaxGateways is the most gateways a domain record may list.
const MaxGateways = maxGateways

// Trust answers which operator key governs a domain. Supernodes are
// configured with the domains they trust.
type Trust interface {
	Operator(domain string) (identity.ID, bool)
}

// TrustMap is a Trust backed by a map from domain to operator ID.
type TrustMap map[string]identity.ID

// Operator implements Trust.
func (m TrustMap) Operator(domain string) (identity.ID, bool) {
	id, ok := m[domain]
	return id, ok
}

// Validator checks PC2 records. Its zero value is strict: it uses the system
// clock, trusts no domain, and so refuses every name and domain record.
type Validator struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Trust pins domain operators. Records for a domain pinned here must be
	// signed by its operator.
	Trust Trust
	// AllowUnknownDomains accepts name and domain records of domains that
	// Trust does not know, as long as they are self-consistent. Clients that
	// resolve through trusted supernodes use it; supernodes must not.
	AllowUnknownDomains bool
	// ClockSkew tolerated for issued-at; zero means DefaultClockSkew.
	ClockSkew time.Duration
}

func (v *Validator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Validator) checkTimes(issued, expires int64, max time.Duration) error {
	now := v.now()
	if expires <= issued {
		return fmt.Errorf("%w: expires before it is issued", ErrMalformed)
	}
	// Unsigned difference: expires > issued, so it cannot wrap, and it is
	// compared in seconds so no multiplication can overflow either.
	if life := uint64(expires) - uint64(issued); life > uint64(max/time.Second) {
		return fmt.Errorf("%w: %d s, limit %s", ErrLifetime, life, max)
	}
	if issued > now.Add(v.skew()).Unix() {
		return fmt.Errorf("%w: issued at %s", ErrFuture, time.Unix(issued, 0).UTC().Format(time.RFC3339))
	}
	if expires <= now.Unix() {
		return fmt.Errorf("%w: at %s", ErrExpired, time.Unix(expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

func (v *Validator) checkOperator(domain string, op identity.ID) error {
	if v.Trust != nil {
		if want, ok := v.Trust.Operator(domain); ok {
			if want != op {
				return fmt.Errorf("%w: %s is governed by %s, not %s", ErrWrongOperator, domain, want.DID(), op.DID())
			}
			return nil
		}
	}
	if v.AllowUnknownDomains {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUntrusted, domain)
}

func checkStrings(what string, list []string, max int, addrs bool) error {
	if len(list) > max {
		return fmt.Errorf("%w: %d %s, limit %d", ErrTooManyEntries, len(list), what, max)
	}
	for _, s := range list {
		if len(s) == 0 || len(s) > maxString {
			return fmt.Errorf("%w: %s entry of %d bytes", ErrMalformed, what, len(s))
		}
		if addrs {
			if _, err := ma.NewMultiaddr(s); err != nil {
				return fmt.Errorf("%w: %s %q: %v", ErrMalformed, what, s, err)
			}
		}
	}
	return nil
}

func checkPeers(what string, peers []Peer, max int) error {
	if len(peers) > max {
		return fmt.Errorf("%w: %d %s, limit %d", ErrTooManyEntries, len(peers), what, max)
	}
	for _, p := range peers {
		if err := checkStrings(what+" addresses", p.Addrs, maxAddrs, true); err != nil {
			return err
		}
	}
	return nil
}

func splitKey(key string) (ns, rest string, err error) {
	if !strings.HasPrefix(key, "/") {
		return "", "", fmt.Errorf("%w: key %q", ErrWrongKey, key)
	}
	ns, rest, ok := strings.Cut(key[1:], "/")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%w: key %q", ErrWrongKey, key)
	}
	return ns, rest, nil
}

func (v *Validator) envelopeFor(key string, value []byte, ns string, kind Kind) (*envelope, string, error) {
	gotNS, rest, err := splitKey(key)
	if err != nil {
		return nil, "", err
	}
	if gotNS != ns {
		return nil, "", fmt.Errorf("%w: key %q is not in namespace %s", ErrWrongKey, key, ns)
	}
	env, err := decodeEnvelope(value)
	if err != nil {
		return nil, "", err
	}
	if env.Kind != kind {
		return nil, "", fmt.Errorf("%w: %s record under a %s key", ErrWrongKey, env.Kind, kind)
	}
	return env, rest, nil
}

// ParseDID fully validates a did record stored under key and returns it.
func (v *Validator) ParseDID(key string, value []byte) (*DID, error) {
	env, rest, err := v.envelopeFor(key, value, NamespaceDID, KindDID)
	if err != nil {
		return nil, err
	}
	var d DID
	if err := unmarshalCanonical(env.Body, &d); err != nil {
		return nil, fmt.Errorf("did record: %w", err)
	}
	if d.Version != Version {
		return nil, fmt.Errorf("did record: %w: %d", ErrVersion, d.Version)
	}
	if rest != d.ID.String() {
		return nil, fmt.Errorf("%w: record of %s stored under %q", ErrWrongKey, d.ID.DID(), key)
	}
	if !verify(d.ID.PublicKey(), tagDID, env.Body, env.Sig) {
		return nil, fmt.Errorf("did record of %s: %w", d.ID.DID(), ErrBadSignature)
	}
	if err := v.checkTimes(d.IssuedAt, d.Expires, MaxDIDLifetime); err != nil {
		return nil, fmt.Errorf("did record of %s: %w", d.ID.DID(), err)
	}
	if err := checkStrings("direct addresses", d.Direct, maxAddrs, true); err != nil {
		return nil, err
	}
	if err := checkPeers("supernodes", d.Supernodes, maxPeers); err != nil {
		return nil, err
	}
	if err := checkStrings("names", d.Names, maxNames, false); err != nil {
		return nil, err
	}
	if len(d.Services) > maxServices {
		return nil, fmt.Errorf("%w: %d services, limit %d", ErrTooManyEntries, len(d.Services), maxServices)
	}
	for _, s := range d.Services {
		if err := checkStrings("service", []string{s.Name, s.Endpoint}, 2, false); err != nil {
			return nil, err
		}
	}
	return &d, nil
}

// ParseName fully validates a name record stored under key and returns it.
func (v *Validator) ParseName(key string, value []byte) (*Name, error) {
	env, rest, err := v.envelopeFor(key, value, NamespaceName, KindName)
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := unmarshalCanonical(env.Body, &g); err != nil {
		return nil, fmt.Errorf("name grant: %w", err)
	}
	if g.Version != Version {
		return nil, fmt.Errorf("name grant: %w: %d", ErrVersion, g.Version)
	}
	if rest != g.Name {
		return nil, fmt.Errorf("%w: grant for %q stored under %q", ErrWrongKey, g.Name, key)
	}
	_, domain, err := SplitName(g.Name)
	if err != nil {
		return nil, err
	}
	if err := v.checkOperator(domain, g.Operator); err != nil {
		return nil, fmt.Errorf("name %s: %w", g.Name, err)
	}
	n := &Name{Grant: g}
	signer := g.Operator
	if g.Signer != (identity.ID{}) {
		if n.Delegation, err = v.checkDelegation(env, &g, domain); err != nil {
			return nil, err
		}
		signer = g.Signer
	} else if len(env.Delegation) != 0 || len(env.DelegationSig) != 0 {
		return nil, fmt.Errorf("name grant for %s: %w: a delegation on a grant the operator signed", g.Name, ErrInconsistent)
	}
	if !verify(signer.PublicKey(), tagGrant, env.Body, env.Sig) {
		return nil, fmt.Errorf("name grant for %s: %w", g.Name, ErrBadSignature)
	}
	if err := v.checkTimes(g.IssuedAt, g.Expires, MaxNameLifetime); err != nil {
		return nil, fmt.Errorf("name grant for %s: %w", g.Name, err)
	}
	switch {
	case g.Since > g.IssuedAt:
		return nil, fmt.Errorf("name grant for %s: %w: holding begins after the grant", g.Name, ErrMalformed)
	case g.After >= g.Seq && g.After != 0:
		return nil, fmt.Errorf("name grant for %s: %w: follows a record of seq %d with seq %d", g.Name, ErrMalformed, g.After, g.Seq)
	case g.RouteUntil != 0 && (g.RouteUntil <= g.IssuedAt || g.RouteUntil > g.Expires):
		return nil, fmt.Errorf("name grant for %s: %w: routes until outside its life", g.Name, ErrMalformed)
	case len(g.Reason) > maxString:
		return nil, fmt.Errorf("name grant for %s: %w: reason of %d bytes", g.Name, ErrMalformed, len(g.Reason))
	}
	switch g.Status {
	case StatusActive, StatusReleased:
		if len(env.Claim) == 0 {
			return nil, fmt.Errorf("name grant for %s: %w: %s grant without the holder's claim", g.Name, ErrInconsistent, g.Status)
		}
	case StatusRevoked:
	default:
		return nil, fmt.Errorf("name grant for %s: %w: unknown status %d", g.Name, ErrMalformed, g.Status)
	}
	if len(env.Claim) == 0 {
		if len(g.ClaimHash) != 0 || len(env.ClaimSig) != 0 {
			return nil, fmt.Errorf("name grant for %s: %w: claim hash without a claim", g.Name, ErrInconsistent)
		}
		return n, nil
	}
	c, err := ParseClaim(SignedClaim{Body: env.Claim, Sig: env.ClaimSig})
	if err != nil {
		return nil, fmt.Errorf("name record %s: %w", g.Name, err)
	}
	h := sha256.Sum256(env.Claim)
	switch {
	case !bytes.Equal(h[:], g.ClaimHash):
		return nil, fmt.Errorf("name record %s: %w: grant is for another claim", g.Name, ErrInconsistent)
	case c.Name != g.Name || c.DID != g.DID:
		return nil, fmt.Errorf("name record %s: %w: claim is for %s by %s", g.Name, ErrInconsistent, c.Name, c.DID.DID())
	case g.Status == StatusActive && c.Action != ActionHold,
		g.Status == StatusReleased && c.Action != ActionRelease:
		return nil, fmt.Errorf("name record %s: %w: %s grant for a claim that does not ask for it", g.Name, ErrInconsistent, g.Status)
	}
	if c.IssuedAt > g.IssuedAt+int64(v.skew()/time.Second) {
		return nil, fmt.Errorf("name claim for %s: %w", g.Name, ErrFuture)
	}
	n.Claim = c
	return n, nil
}

func (v *Validator) skew() time.Duration {
	if v.ClockSkew == 0 {
		return DefaultClockSkew
	}
	return v.ClockSkew
}

// ParseDomain fully validates a domain record stored under key and returns it.
func (v *Validator) ParseDomain(key string, value []byte) (*Domain, error) {
	env, rest, err := v.envelopeFor(key, value, NamespaceDomain, KindDomain)
	if err != nil {
		return nil, err
	}
	var d Domain
	if err := unmarshalCanonical(env.Body, &d); err != nil {
		return nil, fmt.Errorf("domain record: %w", err)
	}
	if d.Version != Version {
		return nil, fmt.Errorf("domain record: %w: %d", ErrVersion, d.Version)
	}
	if rest != d.Domain {
		return nil, fmt.Errorf("%w: record for %q stored under %q", ErrWrongKey, d.Domain, key)
	}
	if err := ValidDomain(d.Domain); err != nil {
		return nil, err
	}
	if err := v.checkOperator(d.Domain, d.Operator); err != nil {
		return nil, fmt.Errorf("domain record: %w", err)
	}
	if !verify(d.Operator.PublicKey(), tagDomain, env.Body, env.Sig) {
		return nil, fmt.Errorf("domain record %s: %w", d.Domain, ErrBadSignature)
	}
	if err := v.checkTimes(d.IssuedAt, d.Expires, MaxDomainLifetime); err != nil {
		return nil, fmt.Errorf("domain record %s: %w", d.Domain, err)
	}
	if err := checkPeers("gateways", d.Gateways, maxGateways); err != nil {
		return nil, err
	}
	if err := ValidTLSMode(d.TLS); err != nil || d.TLS == "auto" {
		return nil, fmt.Errorf("domain record %s: bad TLS mode %q", d.Domain, d.TLS)
	}
	return &d, nil
}

// ParseBackup fully validates a backup record stored under key and
// returns it. The sealed location is opaque here: only its size is
// bounded.
func (v *Validator) ParseBackup(key string, value []byte) (*Backup, error) {
	env, rest, err := v.envelopeFor(key, value, NamespaceBackup, KindBackup)
	if err != nil {
		return nil, err
	}
	var b Backup
	if err := unmarshalCanonical(env.Body, &b); err != nil {
		return nil, fmt.Errorf("backup record: %w", err)
	}
	if b.Version != Version {
		return nil, fmt.Errorf("backup record: %w: %d", ErrVersion, b.Version)
	}
	if rest != b.ID.String() {
		return nil, fmt.Errorf("%w: record of %s stored under %q", ErrWrongKey, b.ID.DID(), key)
	}
	if !verify(b.ID.PublicKey(), tagBackup, env.Body, env.Sig) {
		return nil, fmt.Errorf("backup record of %s: %w", b.ID.DID(), ErrBadSignature)
	}
	if err := v.checkTimes(b.IssuedAt, b.Expires, MaxBackupLifetime); err != nil {
		return nil, fmt.Errorf("backup record of %s: %w", b.ID.DID(), err)
	}
	if len(b.Sealed) == 0 || len(b.Sealed) > MaxSealed {
		return nil, fmt.Errorf("%w: backup record of %s seals %d bytes, limit %d", ErrTooManyEntries, b.ID.DID(), len(b.Sealed), MaxSealed)
	}
	return &b, nil
}

// order is what Select compares: seq first, then issued-at, then the bytes,
// so every node picks the same winner among any set of valid records.
type order struct {
	seq    uint64
	issued int64
}

func (o order) less(p order) bool {
	if o.seq != p.seq {
		return o.seq < p.seq
	}
	return o.issued < p.issued
}

func selectBest(values [][]byte, rank func([]byte) (order, error)) (int, error) {
	best, bestOrder := -1, order{}
	for i, val := range values {
		o, err := rank(val)
		if err != nil {
			continue
		}
		if best < 0 || bestOrder.less(o) || (!o.less(bestOrder) && bytes.Compare(values[best], val) < 0) {
			best, bestOrder = i, o
		}
	}
	if best < 0 {
		return 0, errors.New("records: no valid record to select")
	}
	return best, nil
}

// selectName picks the winning name record by Beats.
func selectName(v *Validator, key string, values [][]byte) (int, error) {
	best := -1
	var bestRec *Name
	for i, val := range values {
		rec, err := v.ParseName(key, val)
		if err != nil {
			continue
		}
		if best < 0 || nameWins(rec, bestRec, val, values[best]) {
			best, bestRec = i, rec
		}
	}
	if best < 0 {
		return 0, errors.New("records: no valid record to select")
	}
	return best, nil
}

// Namespaced returns the libp2p record validator for all PC2 namespaces.
// Anything else (unknown namespace) is refused by the returned map.
func (v *Validator) Namespaced() record.NamespacedValidator {
	return record.NamespacedValidator{
		NamespaceDID:    nsValidator{v: v, ns: NamespaceDID},
		NamespaceName:   nsValidator{v: v, ns: NamespaceName},
		NamespaceDomain: nsValidator{v: v, ns: NamespaceDomain},
		NamespaceBackup: nsValidator{v: v, ns: NamespaceBackup},
		NamespaceTally:  nsValidator{v: v, ns: NamespaceTally},
	}
}

// Parse validates a value of any PC2 namespace and returns the decoded
// record (*DID, *Name, *Domain, *Backup or *Tally).
func (v *Validator) Parse(key string, value []byte) (any, error) {
	ns, _, err := splitKey(key)
	if err != nil {
		return nil, err
	}
	switch ns {
	case NamespaceDID:
		return v.ParseDID(key, value)
	case NamespaceName:
		return v.ParseName(key, value)
	case NamespaceDomain:
		return v.ParseDomain(key, value)
	case NamespaceBackup:
		return v.ParseBackup(key, value)
	case NamespaceTally:
		return v.ParseTally(key, value)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKind, ns)
}

type nsValidator struct {
	v  *Validator
	ns string
}

func (n nsValidator) Validate(key string, value []byte) error {
	if ns, _, err := splitKey(key); err != nil || ns != n.ns {
		return fmt.Errorf("%w: key %q is not in namespace %s", ErrWrongKey, key, n.ns)
	}
	_, err := n.v.Parse(key, value)
	return err
}

func (n nsValidator) Select(key string, values [][]byte) (int, error) {
	if n.ns == NamespaceName {
		return selectName(n.v, key, values)
	}
	return selectBest(values, func(val []byte) (order, error) {
		rec, err := n.v.Parse(key, val)
		if err != nil {
			return order{}, err
		}
		seq, issued, err := SeqOf(rec)
		return order{seq, issued}, err
	})
}

// SeqOf is the seq and issued-at of a record Parse returned: what
// decides which of two versions wins.
func SeqOf(rec any) (seq uint64, issuedAt int64, err error) {
	switch r := rec.(type) {
	case *DID:
		return r.Seq, r.IssuedAt, nil
	case *Name:
		return r.Grant.Seq, r.Grant.IssuedAt, nil
	case *Domain:
		return r.Seq, r.IssuedAt, nil
	case *Backup:
		return r.Seq, r.IssuedAt, nil
	case *Tally:
		return r.Seq, r.IssuedAt, nil
	}
	return 0, 0, ErrUnknownKind
}
