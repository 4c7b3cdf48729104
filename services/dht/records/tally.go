package records

import (
	"crypto/ed25519"
	"fmt"
	"strings"

	"github.com/pc2/pc2/provisioning/identity"
)

// A tally is what a domain's granting supernodes share about claims, so
// that their limits hold for the domain and not per supernode: which
// name an invite code was used for, and which names a DID was granted.
// It is stored under TallyKey(domain, subject) and signed like a grant:
// by the domain's operator, or by a supernode under the operator's
// delegation, which it carries. The newest (seq) wins; a granter reads,
// adds and publishes.

// NamespaceTally is the tally records' namespace.
const NamespaceTally = "tally"

// Tally subjects.
const (
	// TallyInvite + the hex SHA-256 of an invite code (as the names API
	// hashes it): the names it was used for.
	TallyInvite = "invite-"
	// TallyDID + a node ID: the names the DID was granted.
	TallyDID = "did-"
	// TallyHosts + a node ID: the owners' own domains (hosts under none
	// of the operator's domains) the operator's gateways serve for the
	// DID, where they take them by invite only.
	TallyHosts = "hosts-"
	// TallyHostInvite + the hex SHA-256 of a custom-domain invite code:
	// the host it was used for.
	TallyHostInvite = "hostinvite-"
)

// MaxTallied bounds the names (or hosts) of one tally.
const MaxTallied = 16

// Tally is a tally record's body.
type Tally struct {
	Version  uint64        `cbor:"1,keyasint" json:"version"`
	Domain   string        `cbor:"2,keyasint" json:"domain"`
	Subject  string        `cbor:"3,keyasint" json:"subject"`
	Seq      uint64        `cbor:"4,keyasint" json:"seq"`
	IssuedAt int64         `cbor:"5,keyasint" json:"issued_at"`
	Expires  int64         `cbor:"6,keyasint" json:"expires"`
	Operator identity.ID   `cbor:"7,keyasint" json:"operator"`
	Signer   identity.ID   `cbor:"8,keyasint,omitzero" json:"signer,omitzero"`
	Names    []TalliedName `cbor:"9,keyasint,omitempty" json:"names,omitempty"`
}

// TalliedName is a name a tally counts, until it expires.
type TalliedName struct {
	Name    string `cbor:"1,keyasint" json:"name"`
	Expires int64  `cbor:"2,keyasint" json:"expires"`
}

// Live is the names of t not expired at unix time now.
func (t *Tally) Live(now int64) []TalliedName {
	var out []TalliedName
	for _, n := range t.Names {
		if n.Expires > now {
			out = append(out, n)
		}
	}
	return out
}

// TallyKey is the DHT key of domain's tally of subject.
func TallyKey(domain, subject string) string {
	return "/" + NamespaceTally + "/" + domain + "/" + subject
}

// SignTally encodes t and signs it: with the operator's key (del nil,
// t.Signer zero) or with a supernode's under the operator's delegation
// (t.Signer set to the delegation's supernode).
func SignTally(key ed25519.PrivateKey, del *SignedDelegation, t *Tally) ([]byte, error) {
	tt := *t
	env := envelope{Kind: KindTally}
	signer := tt.Operator
	if del != nil {
		d, err := ParseDelegation(*del)
		if err != nil {
			return nil, err
		}
		if d.Domain != tt.Domain || d.Operator != tt.Operator {
			return nil, fmt.Errorf("sign tally: the delegation is for %s by %s", d.Domain, d.Operator.DID())
		}
		tt.Signer, signer = d.Supernode, d.Supernode
		env.Delegation, env.DelegationSig = del.Body, del.Sig
	} else {
		tt.Signer = identity.ID{}
	}
	body, sig, err := signBody(key, signer, "tally", tagTally, &tt)
	if err != nil {
		return nil, err
	}
	env.Body, env.Sig = body, sig
	return marshal(&env)
}

// ParseTally fully validates a tally record stored under key.
func (v *Validator) ParseTally(key string, value []byte) (*Tally, error) {
	env, rest, err := v.envelopeFor(key, value, NamespaceTally, KindTally)
	if err != nil {
		return nil, err
	}
	var t Tally
	if err := unmarshalCanonical(env.Body, &t); err != nil {
		return nil, fmt.Errorf("tally: %w", err)
	}
	if t.Version != Version {
		return nil, fmt.Errorf("tally: %w: %d", ErrVersion, t.Version)
	}
	if rest != t.Domain+"/"+t.Subject {
		return nil, fmt.Errorf("%w: tally of %s/%s stored under %q", ErrWrongKey, t.Domain, t.Subject, key)
	}
	if err := ValidDomain(t.Domain); err != nil {
		return nil, err
	}
	if err := checkSubject(t.Subject); err != nil {
		return nil, err
	}
	if err := v.checkOperator(t.Domain, t.Operator); err != nil {
		return nil, fmt.Errorf("tally: %w", err)
	}
	signer := t.Operator
	what := "tally " + t.Domain + "/" + t.Subject
	if t.Signer != (identity.ID{}) {
		if _, err := v.checkDelegated(env, what, t.Domain, t.Operator, t.Signer, t.IssuedAt); err != nil {
			return nil, err
		}
		signer = t.Signer
	} else if len(env.Delegation) != 0 || len(env.DelegationSig) != 0 {
		return nil, fmt.Errorf("%s: %w: a delegation on a tally the operator signed", what, ErrInconsistent)
	}
	if len(env.Claim) != 0 || len(env.ClaimSig) != 0 {
		return nil, fmt.Errorf("%s: %w: a claim on a tally", what, ErrMalformed)
	}
	if !verify(signer.PublicKey(), tagTally, env.Body, env.Sig) {
		return nil, fmt.Errorf("%s: %w", what, ErrBadSignature)
	}
	if err := v.checkTimes(t.IssuedAt, t.Expires, MaxNameLifetime); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(t.Names) > MaxTallied {
		return nil, fmt.Errorf("%w: %d names in %s, limit %d", ErrTooManyEntries, len(t.Names), what, MaxTallied)
	}
	for _, n := range t.Names {
		if t.HoldsHosts() {
			if err := ValidDomain(n.Name); err != nil || n.Name == t.Domain || strings.HasSuffix(n.Name, "."+t.Domain) {
				return nil, fmt.Errorf("%s: %w: %q is not a host outside %s", what, ErrMalformed, n.Name, t.Domain)
			}
		} else if _, d, err := SplitName(n.Name); err != nil || d != t.Domain {
			return nil, fmt.Errorf("%s: %w: %q is not a name under %s", what, ErrMalformed, n.Name, t.Domain)
		}
	}
	return &t, nil
}

// HoldsHosts says whether t counts owners' own domains (TallyHosts,
// TallyHostInvite) rather than names under t.Domain.
func (t *Tally) HoldsHosts() bool {
	return strings.HasPrefix(t.Subject, TallyHosts) || strings.HasPrefix(t.Subject, TallyHostInvite)
}

// checkSubject checks a tally's subject: an invite code's hash or a
// node ID, after its prefix.
func checkSubject(s string) error {
	for _, p := range []string{TallyInvite, TallyHostInvite} {
		if h, ok := strings.CutPrefix(s, p); ok {
			if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
				return fmt.Errorf("%w: tally subject %q", ErrMalformed, s)
			}
			return nil
		}
	}
	for _, p := range []string{TallyDID, TallyHosts} {
		if id, ok := strings.CutPrefix(s, p); ok {
			if _, err := identity.ParseID(id); err != nil {
				return fmt.Errorf("%w: tally subject %q: %v", ErrMalformed, s, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: tally subject %q", ErrMalformed, s)
}
