package records

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/pc2/pc2/provisioning/identity"
)

// Version is the only record version this code writes and accepts.
const Version = 1

// Peer names a supernode or gateway: its node ID and libp2p multiaddrs.
type Peer struct {
	ID    identity.ID `cbor:"1,keyasint" json:"id"`
	Addrs []string    `cbor:"2,keyasint,omitempty" json:"addrs,omitempty"`
}

// Service is an endpoint a node offers, such as its personal cloud.
type Service struct {
	Name     string `cbor:"1,keyasint" json:"name"`
	Endpoint string `cbor:"2,keyasint" json:"endpoint"`
}

// DID is a node's self-signed record: how to reach it. It is stored under
// DIDKey(ID) and signed by the key whose public half is ID.
type DID struct {
	Version    uint64      `cbor:"1,keyasint" json:"version"`
	ID         identity.ID `cbor:"2,keyasint" json:"did"`
	Seq        uint64      `cbor:"3,keyasint" json:"seq"`
	IssuedAt   int64       `cbor:"4,keyasint" json:"issued_at"`
	Expires    int64       `cbor:"5,keyasint" json:"expires"`
	Direct     []string    `cbor:"6,keyasint,omitempty" json:"direct,omitempty"`
	Supernodes []Peer      `cbor:"7,keyasint,omitempty" json:"supernodes,omitempty"`
	Names      []string    `cbor:"8,keyasint,omitempty" json:"names,omitempty"`
	Services   []Service   `cbor:"9,keyasint,omitempty" json:"services,omitempty"`
}

// Status is the state a name grant puts a name in.
type Status uint8

const (
	StatusActive   Status = 0 // held by Grant.DID
	StatusReleased Status = 1 // given up by its holder (a signed release claim)
	StatusRevoked  Status = 2 // taken back by the operator
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusReleased:
		return "released"
	case StatusRevoked:
		return "revoked"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// MarshalText makes Status readable in JSON output.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads the form MarshalText writes.
func (s *Status) UnmarshalText(b []byte) error {
	for _, v := range []Status{StatusActive, StatusReleased, StatusRevoked} {
		if string(b) == v.String() {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("records: unknown name status %q", b)
}

// Action is what a name claim asks the operator for.
type Action uint8

const (
	ActionHold    Action = 0 // claim or renew the name
	ActionRelease Action = 1 // give the name up
)

// MarshalText makes Action readable in JSON output.
func (a Action) MarshalText() ([]byte, error) {
	switch a {
	case ActionHold:
		return []byte("hold"), nil
	case ActionRelease:
		return []byte("release"), nil
	}
	return []byte(fmt.Sprintf("action(%d)", uint8(a))), nil
}

// UnmarshalText reads the form MarshalText writes.
func (a *Action) UnmarshalText(b []byte) error {
	switch string(b) {
	case "hold":
		*a = ActionHold
	case "release":
		*a = ActionRelease
	default:
		return fmt.Errorf("records: unknown claim action %q", b)
	}
	return nil
}

// Grant is the operator's signed decision binding Name to DID.
type Grant struct {
	Version   uint64      `cbor:"1,keyasint" json:"version"`
	Name      string      `cbor:"2,keyasint" json:"name"`
	DID       identity.ID `cbor:"3,keyasint" json:"did"`
	Seq       uint64      `cbor:"4,keyasint" json:"seq"`
	Status    Status      `cbor:"5,keyasint" json:"status"`
	IssuedAt  int64       `cbor:"6,keyasint" json:"issued_at"`
	Expires   int64       `cbor:"7,keyasint" json:"expires"`
	Operator  identity.ID `cbor:"8,keyasint" json:"operator"`
	ClaimHash []byte      `cbor:"9,keyasint,omitempty" json:"claim_hash,omitempty"`
	// Signer is the supernode that signed the grant under the
	// operator's delegation, which the record carries (zero: the
	// operator signed it with its own key).
	Signer identity.ID `cbor:"10,keyasint,omitzero" json:"signer,omitzero"`
	// Since is when this holding began: the first grant of the name to
	// DID after it was free. Renewals, the release and a revocation
	// keep it. Zero in records written before holdings were dated.
	Since int64 `cbor:"11,keyasint,omitempty" json:"since,omitempty"`
	// After is the seq of the newest record of the name the granter
	// saw when this holding began (0: none). A holding that began after
	// another's record beats it; two holdings that did not see each
	// other (claims that raced on two supernodes) are decided by Since
	// (see Beats).
	After uint64 `cbor:"12,keyasint,omitempty" json:"after,omitempty"`
	// Reason says why, for a revocation (shown to the holder).
	Reason string `cbor:"13,keyasint,omitempty" json:"reason,omitempty"`
	// RouteUntil is when gateways stop routing the name to DID unless
	// the holder's node renewed it (0: at Expires). It is short (a day
	// by default): an old grant that DHT nodes replay after a release
	// or revocation is honoured for that long at most. Expires, longer,
	// is how long the name stays reserved to its holder, so a node that
	// is off for a holiday keeps its name.
	RouteUntil int64 `cbor:"14,keyasint,omitempty" json:"route_until,omitempty"`
}

// RoutesAt reports whether an active grant still routes visitors at
// unix time now (its holder renewed it in time).
func (g *Grant) RoutesAt(now int64) bool {
	if g.Status != StatusActive {
		return false
	}
	if g.RouteUntil != 0 {
		return now < g.RouteUntil
	}
	return now < g.Expires
}

// HoldingSince is when g's holding began (IssuedAt for records written
// before holdings were dated).
func (g *Grant) HoldingSince() int64 {
	if g.Since != 0 {
		return g.Since
	}
	return g.IssuedAt
}

// Claim is the holder's signed request for (or release of) a name: the proof
// that the DID in the grant asked for it.
type Claim struct {
	Version  uint64      `cbor:"1,keyasint" json:"version"`
	Name     string      `cbor:"2,keyasint" json:"name"`
	DID      identity.ID `cbor:"3,keyasint" json:"did"`
	Action   Action      `cbor:"4,keyasint" json:"action"`
	IssuedAt int64       `cbor:"5,keyasint" json:"issued_at"`
	Nonce    []byte      `cbor:"6,keyasint" json:"nonce"`
}

// Name is a decoded name record: the grant, unless revoked the claim,
// and the delegation of a grant a supernode signed.
type Name struct {
	Grant      Grant       `json:"grant"`
	Claim      *Claim      `json:"claim,omitempty"`
	Delegation *Delegation `json:"delegation,omitempty"`
}

// Domain says which operator key governs a domain and which gateways serve
// it. It is signed by Operator.
type Domain struct {
	Version  uint64      `cbor:"1,keyasint" json:"version"`
	Domain   string      `cbor:"2,keyasint" json:"domain"`
	Operator identity.ID `cbor:"3,keyasint" json:"operator"`
	Seq      uint64      `cbor:"4,keyasint" json:"seq"`
	IssuedAt int64       `cbor:"5,keyasint" json:"issued_at"`
	Expires  int64       `cbor:"6,keyasint" json:"expires"`
	Gateways []Peer      `cbor:"7,keyasint,omitempty" json:"gateways,omitempty"`
	// TLS is where the domain's visitors' TLS ends: TLSAuto ("": at the
	// node when it holds a certificate, else at the gateway),
	// TLSEndToEnd (only at the node) or TLSGateway (only at the
	// gateway). Every gateway of the domain follows it, and nodes read
	// it to know whether to get certificates of their own.
	TLS string `cbor:"8,keyasint,omitempty" json:"tls,omitempty"`
	// Mesh lets the gateways of other operators that trust the domain
	// (a mesh of operators) serve its names to visitors who reach them;
	// without it they answer that the name is served elsewhere.
	Mesh bool `cbor:"9,keyasint,omitempty" json:"mesh,omitempty"`
}

// TLS modes of a domain (Domain.TLS).
const (
	TLSAuto     = ""
	TLSEndToEnd = "end-to-end"
	TLSGateway  = "gateway"
)

// ValidTLSMode checks a domain's TLS mode ("auto" is TLSAuto written
// out, for config files).
func ValidTLSMode(m string) error {
	switch m {
	case TLSAuto, "auto", TLSEndToEnd, TLSGateway:
		return nil
	}
	return fmt.Errorf("records: TLS mode %q is not auto, end-to-end or gateway", m)
}

// Backup is a node's self-signed pointer to its backups: where they are,
// sealed with a key only the identity's words give back
// (services/backup.Seal), so the record holds no readable secret. A
// fresh device restored from the words finds its data through it. It
// is stored under BackupKey(ID) and signed by the key whose public half
// is ID; it outlives the device by up to MaxBackupLifetime.
type Backup struct {
	Version  uint64      `cbor:"1,keyasint" json:"version"`
	ID       identity.ID `cbor:"2,keyasint" json:"did"`
	Seq      uint64      `cbor:"3,keyasint" json:"seq"`
	IssuedAt int64       `cbor:"4,keyasint" json:"issued_at"`
	Expires  int64       `cbor:"5,keyasint" json:"expires"`
	Sealed   []byte      `cbor:"6,keyasint" json:"sealed"`
}

// DHT keys. The first path element is the validator namespace.
const (
	NamespaceDID    = "did"
	NamespaceName   = "name"
	NamespaceDomain = "domain"
	NamespaceBackup = "backup"
)

// BackupKey is the DHT key of id's backup record.
func BackupKey(id identity.ID) string { return "/" + NamespaceBackup + "/" + id.String() }

// SignBackup encodes b and signs it with key, which must be b.ID's key.
func SignBackup(key ed25519.PrivateKey, b *Backup) ([]byte, error) {
	return signRecord(key, b.ID, KindBackup, tagBackup, b)
}

// DIDKey is the DHT key of id's did record.
func DIDKey(id identity.ID) string { return "/" + NamespaceDID + "/" + id.String() }

// NameKey is the DHT key of a fully qualified name's record.
func NameKey(fqdn string) string { return "/" + NamespaceName + "/" + fqdn }

// DomainKey is the DHT key of a domain's record.
func DomainKey(domain string) string { return "/" + NamespaceDomain + "/" + domain }

func checkSigner(key ed25519.PrivateKey, want identity.ID, what string) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("sign %s: invalid private key", what)
	}
	got, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return fmt.Errorf("sign %s: %w", what, err)
	}
	if got != want {
		return fmt.Errorf("sign %s: key %s does not match %s", what, got, want)
	}
	return nil
}

// SignDID encodes d and signs it with key, which must be d.ID's key. The
// result is the DHT value to put under DIDKey(d.ID).
func SignDID(key ed25519.PrivateKey, d *DID) ([]byte, error) {
	return signRecord(key, d.ID, KindDID, tagDID, d)
}

// signRecord encodes body, signs it with key (which must be signer's) and
// wraps both in an envelope of the given kind.
func signRecord(key ed25519.PrivateKey, signer identity.ID, kind Kind, tag string, body any) ([]byte, error) {
	what := kind.String() + " record"
	if err := checkSigner(key, signer, what); err != nil {
		return nil, err
	}
	b, err := marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return marshal(&envelope{Kind: kind, Body: b, Sig: sign(key, tag, b)})
}

// SignedClaim is a claim encoded and signed by its DID's key, ready to be
// sent to an operator.
type SignedClaim struct {
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// SignClaim encodes c and signs it with key, which must be c.DID's key.
func SignClaim(key ed25519.PrivateKey, c *Claim) (SignedClaim, error) {
	body, sig, err := signBody(key, c.DID, "name claim", tagClaim, c)
	return SignedClaim{Body: body, Sig: sig}, err
}

// signBody encodes v and signs it with key (which must be signer's): the
// halves of a signed statement that travels on its own or inside a
// record (a claim, a delegation).
func signBody(key ed25519.PrivateKey, signer identity.ID, what, tag string, v any) (body, sig []byte, err error) {
	if err := checkSigner(key, signer, what); err != nil {
		return nil, nil, err
	}
	if body, err = marshal(v); err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", what, err)
	}
	return body, sign(key, tag, body), nil
}

// ParseClaim decodes and verifies a signed claim on its own (as an operator
// does before granting). It does not check times: that is policy.
func ParseClaim(sc SignedClaim) (*Claim, error) {
	if len(sc.Body) > MaxRecordSize {
		return nil, fmt.Errorf("%w: claim of %d bytes", ErrOversize, len(sc.Body))
	}
	var c Claim
	if err := unmarshalCanonical(sc.Body, &c); err != nil {
		return nil, fmt.Errorf("name claim: %w", err)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("name claim: %w: %d", ErrVersion, c.Version)
	}
	if !verify(c.DID.PublicKey(), tagClaim, sc.Body, sc.Sig) {
		return nil, fmt.Errorf("name claim for %s: %w (not signed by %s)", c.Name, ErrBadSignature, c.DID.DID())
	}
	if len(c.Nonce) < 8 || len(c.Nonce) > 64 {
		return nil, fmt.Errorf("name claim: %w: nonce of %d bytes", ErrMalformed, len(c.Nonce))
	}
	if _, _, err := SplitName(c.Name); err != nil {
		return nil, fmt.Errorf("name claim: %w", err)
	}
	return &c, nil
}

// SignGrant encodes g, binds it to claim (nil only for a revocation) and
// signs it with the operator key, which must be g.Operator's key. The result
// is the DHT value to put under NameKey(g.Name).
func SignGrant(operator ed25519.PrivateKey, g *Grant, claim *SignedClaim) ([]byte, error) {
	if err := checkSigner(operator, g.Operator, "name grant"); err != nil {
		return nil, err
	}
	if g.Signer != (identity.ID{}) {
		return nil, errors.New("sign name grant: a grant with a signer is signed under its delegation (SignDelegatedGrant)")
	}
	return signGrant(operator, g, claim, envelope{Kind: KindName})
}

// SignDelegatedGrant is SignGrant for a supernode the domain's operator
// delegated granting to: key is the supernode's, del the operator's
// delegation to it, which the record carries. It sets g.Signer.
func SignDelegatedGrant(key ed25519.PrivateKey, del SignedDelegation, g *Grant, claim *SignedClaim) ([]byte, error) {
	d, err := ParseDelegation(del)
	if err != nil {
		return nil, err
	}
	_, domain, err := SplitName(g.Name)
	if err != nil {
		return nil, err
	}
	switch {
	case d.Domain != domain:
		return nil, fmt.Errorf("sign name grant: the delegation is for %s, not %s", d.Domain, domain)
	case d.Operator != g.Operator:
		return nil, fmt.Errorf("sign name grant: the delegation is from %s, the grant names %s", d.Operator.DID(), g.Operator.DID())
	}
	if err := checkSigner(key, d.Supernode, "name grant"); err != nil {
		return nil, err
	}
	gg := *g
	gg.Signer = d.Supernode
	return signGrant(key, &gg, claim, envelope{Kind: KindName, Delegation: del.Body, DelegationSig: del.Sig})
}

func signGrant(key ed25519.PrivateKey, g *Grant, claim *SignedClaim, env envelope) ([]byte, error) {
	gg := *g
	if claim != nil {
		h := sha256.Sum256(claim.Body)
		gg.ClaimHash = h[:]
		env.Claim, env.ClaimSig = claim.Body, claim.Sig
	} else {
		gg.ClaimHash = nil
	}
	body, err := marshal(&gg)
	if err != nil {
		return nil, fmt.Errorf("encode name grant: %w", err)
	}
	env.Body, env.Sig = body, sign(key, tagGrant, body)
	return marshal(&env)
}

// SignDomain encodes d and signs it with the operator key (d.Operator's).
func SignDomain(operator ed25519.PrivateKey, d *Domain) ([]byte, error) {
	return signRecord(operator, d.Operator, KindDomain, tagDomain, d)
}
