package records

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

// MaxDelegationLifetime bounds a delegation: an operator re-signs its
// supernodes' delegations at least this often, so a supernode it stops
// trusting loses the right to grant by itself.
const MaxDelegationLifetime = 400 * 24 * time.Hour

// Delegation is a domain operator's signed statement that Supernode may
// grant names of Domain on its behalf. A name record whose grant the
// supernode signed carries it, so every DHT node checks the chain
// (pinned operator -> delegation -> grant) from the record alone.
type Delegation struct {
	Version   uint64      `cbor:"1,keyasint" json:"version"`
	Domain    string      `cbor:"2,keyasint" json:"domain"`
	Operator  identity.ID `cbor:"3,keyasint" json:"operator"`
	Supernode identity.ID `cbor:"4,keyasint" json:"supernode"`
	IssuedAt  int64       `cbor:"5,keyasint" json:"issued_at"`
	Expires   int64       `cbor:"6,keyasint" json:"expires"`
}

// SignedDelegation is a delegation encoded and signed by its operator: the
// file an operator gives a supernode.
type SignedDelegation struct {
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// SignDelegation encodes d and signs it with the operator key, which must
// be d.Operator's.
func SignDelegation(operator ed25519.PrivateKey, d *Delegation) (SignedDelegation, error) {
	if err := ValidDomain(d.Domain); err != nil {
		return SignedDelegation{}, fmt.Errorf("sign delegation: %w", err)
	}
	if d.Expires <= d.IssuedAt || d.Expires-d.IssuedAt > int64(MaxDelegationLifetime/time.Second) {
		return SignedDelegation{}, fmt.Errorf("sign delegation: lifetime must be positive and at most %v", MaxDelegationLifetime)
	}
	body, sig, err := signBody(operator, d.Operator, "delegation", tagDelegation, d)
	return SignedDelegation{Body: body, Sig: sig}, err
}

// ParseDelegation decodes a signed delegation and checks its form and its
// operator's signature. It does not check times or whether the operator
// governs the domain: the Validator does that for records, a supernode
// when it loads its delegation.
func ParseDelegation(sd SignedDelegation) (*Delegation, error) {
	if len(sd.Body) > MaxRecordSize {
		return nil, fmt.Errorf("%w: delegation of %d bytes", ErrOversize, len(sd.Body))
	}
	var d Delegation
	if err := unmarshalCanonical(sd.Body, &d); err != nil {
		return nil, fmt.Errorf("delegation: %w", err)
	}
	if d.Version != Version {
		return nil, fmt.Errorf("delegation: %w: %d", ErrVersion, d.Version)
	}
	if err := ValidDomain(d.Domain); err != nil {
		return nil, fmt.Errorf("delegation: %w", err)
	}
	if !verify(d.Operator.PublicKey(), tagDelegation, sd.Body, sd.Sig) {
		return nil, fmt.Errorf("delegation of %s to %s: %w (not signed by %s)", d.Domain, d.Supernode.DID(), ErrBadSignature, d.Operator.DID())
	}
	if d.Expires <= d.IssuedAt || d.Expires-d.IssuedAt > int64(MaxDelegationLifetime/time.Second) {
		return nil, fmt.Errorf("delegation of %s: %w", d.Domain, ErrLifetime)
	}
	return &d, nil
}

// checkDelegation verifies the delegation a supernode-signed grant
// carries: the operator the node trusts for the domain signed it, to the
// grant's signer, and it was valid when the grant was issued and is now.
func (v *Validator) checkDelegation(env *envelope, g *Grant, domain string) (*Delegation, error) {
	return v.checkDelegated(env, "name grant for "+g.Name, domain, g.Operator, g.Signer, g.IssuedAt)
}

// checkDelegated checks the delegation env carries for a record (what)
// of domain that signer signed for operator at issued.
func (v *Validator) checkDelegated(env *envelope, what, domain string, operator, signer identity.ID, issued int64) (*Delegation, error) {
	if len(env.Delegation) == 0 {
		return nil, fmt.Errorf("%s: %w: signed by %s without a delegation", what, ErrWrongOperator, signer.DID())
	}
	d, err := ParseDelegation(SignedDelegation{Body: env.Delegation, Sig: env.DelegationSig})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case d.Domain != domain:
		return nil, fmt.Errorf("%s: %w: delegation for %s", what, ErrInconsistent, d.Domain)
	case d.Operator != operator:
		return nil, fmt.Errorf("%s: %w: delegation from %s", what, ErrWrongOperator, d.Operator.DID())
	case d.Supernode != signer:
		return nil, fmt.Errorf("%s: %w: delegation to %s, signed by %s", what, ErrWrongOperator, d.Supernode.DID(), signer.DID())
	case issued < d.IssuedAt || issued >= d.Expires:
		return nil, fmt.Errorf("%s: %w: issued outside its delegation", what, ErrWrongOperator)
	}
	if err := v.checkTimes(d.IssuedAt, d.Expires, MaxDelegationLifetime); err != nil {
		return nil, fmt.Errorf("delegation of %s to %s: %w", d.Domain, d.Supernode.DID(), err)
	}
	return d, nil
}

// Beats reports whether name record a wins over b, two valid records of
// one name, and is the order Select and every publisher use:
//
//   - Records of one holding (same DID and Since: renewals, the release, a
//     revocation) are ordered by seq, then issued-at.
//   - A holding that began after the granter saw the other's record
//     (After >= the other's seq) beats it: a name released and granted
//     again is never taken back by an old grant that DHT nodes replay.
//   - Two holdings that did not see each other (two supernodes granted
//     one free name to two DIDs at once) are decided by who began first
//     (Since, then the lower seq: the granters' clocks in milliseconds),
//     so the first claim wins everywhere.
//
// Equal records fall back to comparing the bytes (in Select).
func Beats(a, b *Grant) int {
	sameHolding := a.DID == b.DID && (a.Since == b.Since || a.Since == 0 || b.Since == 0)
	if !sameHolding {
		aSaw, bSaw := a.After >= b.Seq && a.After != 0, b.After >= a.Seq && b.After != 0
		switch {
		case aSaw && !bSaw:
			return 1
		case bSaw && !aSaw:
			return -1
		case !aSaw && !bSaw:
			if as, bs := a.HoldingSince(), b.HoldingSince(); as != bs {
				if as < bs {
					return 1
				}
				return -1
			}
			// Begun in the same second: the lower seq (the granter's
			// clock in milliseconds) was first.
			if a.Seq != b.Seq {
				if a.Seq < b.Seq {
					return 1
				}
				return -1
			}
		}
	}
	switch {
	case a.Seq != b.Seq:
		if a.Seq > b.Seq {
			return 1
		}
		return -1
	case a.IssuedAt != b.IssuedAt:
		if a.IssuedAt > b.IssuedAt {
			return 1
		}
		return -1
	}
	return 0
}

// nameWins is Beats over encoded records, the bytes breaking ties.
func nameWins(a, b *Name, aval, bval []byte) bool {
	if c := Beats(&a.Grant, &b.Grant); c != 0 {
		return c > 0
	}
	return bytes.Compare(aval, bval) > 0
}
