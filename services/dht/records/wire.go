// Package records is the wire format of PC2's DHT records (did, name and
// domain): their canonical CBOR encoding, signing, and the Validator that
// every DHT node runs on every record it stores or receives.
package records

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"reflect"

	"filippo.io/edwards25519"
	"github.com/fxamacker/cbor/v2"

	"github.com/pc2/pc2/provisioning/identity"
)

// MaxRecordSize bounds the encoded size of any record value. A did record
// with 16 direct addresses and 8 supernodes of 8 addresses each stays well
// under it; anything bigger is refused before it is decoded.
const MaxRecordSize = 8 << 10

// Sentinel errors. Validation errors wrap one of them so callers (and tests)
// can tell the classes apart.
var (
	ErrMalformed      = errors.New("records: malformed record")
	ErrOversize       = errors.New("records: record too large")
	ErrBadSignature   = errors.New("records: bad signature")
	ErrWrongKey       = errors.New("records: record does not match its key")
	ErrExpired        = errors.New("records: record expired")
	ErrFuture         = errors.New("records: record issued in the future")
	ErrLifetime       = errors.New("records: record lifetime too long")
	ErrUntrusted      = errors.New("records: domain not trusted")
	ErrWrongOperator  = errors.New("records: signed by a key that does not govern the domain")
	ErrUnknownKind    = errors.New("records: unknown record namespace")
	ErrInvalidName    = errors.New("records: invalid name")
	ErrInconsistent   = errors.New("records: grant and claim disagree")
	ErrVersion        = errors.New("records: unsupported record version")
	ErrTooManyEntries = errors.New("records: too many entries")
)

// Kind tags which record a value holds. It is part of the signed envelope so
// a signature over one kind can never be replayed as another.
type Kind uint8

const (
	KindDID    Kind = 1
	KindName   Kind = 2
	KindDomain Kind = 3
	KindBackup Kind = 4
	KindTally  Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindDID:
		return "did"
	case KindName:
		return "name"
	case KindDomain:
		return "domain"
	case KindBackup:
		return "backup"
	case KindTally:
		return "tally"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Signature domain tags, prefixed to the signed bytes so a signature made for
// one purpose cannot verify for another (or for anything outside PC2).
const (
	tagDID        = "pc2/record/did/v1\x00"
	tagGrant      = "pc2/record/name-grant/v1\x00"
	tagClaim      = "pc2/record/name-claim/v1\x00"
	tagDomain     = "pc2/record/domain/v1\x00"
	tagBackup     = "pc2/record/backup/v1\x00"
	tagDelegation = "pc2/record/delegation/v1\x00"
	tagTally      = "pc2/record/tally/v1\x00"
)

// envelope is the DHT value: a kind, a canonical body, and signatures. Name
// records carry a second signed body, the holder's claim.
type envelope struct {
	Kind     Kind   `cbor:"1,keyasint"`
	Body     []byte `cbor:"2,keyasint"`
	Sig      []byte `cbor:"3,keyasint"`
	Claim    []byte `cbor:"4,keyasint,omitempty"`
	ClaimSig []byte `cbor:"5,keyasint,omitempty"`
	// A grant signed by a supernode carries the operator's delegation.
	Delegation    []byte `cbor:"6,keyasint,omitempty"`
	DelegationSig []byte `cbor:"7,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   8,
		MaxArrayElements:  64,
		MaxMapPairs:       32,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// marshal encodes v with Core Deterministic Encoding (RFC 8949 4.2.1).
func marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// unmarshalCanonical decodes data into v and refuses any encoding other than
// the canonical one, so every record has exactly one byte form and what was
// signed is what is stored.
func unmarshalCanonical(data []byte, v any) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	again, err := encMode.Marshal(reflect.ValueOf(v).Elem().Interface())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("%w: not canonical CBOR", ErrMalformed)
	}
	return nil
}

func signedMessage(tag string, body []byte) []byte {
	m := make([]byte, 0, len(tag)+len(body))
	m = append(m, tag...)
	return append(m, body...)
}

func sign(key ed25519.PrivateKey, tag string, body []byte) []byte {
	return ed25519.Sign(key, signedMessage(tag, body))
}

func verify(pub ed25519.PublicKey, tag string, body, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	if smallOrder(pub) {
		return false
	}
	return ed25519.Verify(pub, signedMessage(tag, body), sig)
}

// smallOrder reports whether pub is not a point or is of small order. For
// such keys a fixed signature verifies every message (RFC 8032 verification
// does not exclude them), so anyone could sign records for those IDs. No
// key made from a seed is of small order.
func smallOrder(pub []byte) bool {
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return true
	}
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}

func decodeEnvelope(value []byte) (*envelope, error) {
	if len(value) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrOversize, len(value), MaxRecordSize)
	}
	var env envelope
	if err := unmarshalCanonical(value, &env); err != nil {
		return nil, err
	}
	return &env, nil
}

// VerifyStatement checks sig, by id's key, over tag followed by msg, as
// records' own signatures are checked (small-order keys refused): for
// statements that travel outside the DHT (a custom domain's DNS proof).
func VerifyStatement(id identity.ID, tag string, msg, sig []byte) bool {
	return verify(id.PublicKey(), tag, msg, sig)
}
