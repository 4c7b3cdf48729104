// Package identity is the node identity: BIP39 words -> SLIP-0010 Ed25519 key
// -> did:boson DID, and the key file.
//
// A node is created from 24 English BIP39 words (256 bits of entropy) and an
// optional BIP39 passphrase. The 512-bit BIP39 seed feeds SLIP-0010 Ed25519
// derivation; every key lives at its own hardened path, so knowing one key
// reveals nothing about the others and the same words on a fresh device give
// back every key:
//
//	Path                          Key                          Status
//	m/44'/2305'/0'/0'/0'          node key (ID, DID, libp2p)   NodeKeyPath
//	m/44'/2305'/1'/0'/0'          backup encryption key        BackupKeyPath (reserved)
//	m/44'/2305'/2'/<device>'/0'   per-device keys              reserved
//
// 44' is the BIP44 purpose, 2305' is Elastos' SLIP-44 coin type (the network
// Boson DIDs come from); the third level is the key's role. SLIP-0010 defines
// only hardened derivation for Ed25519, so every level is hardened.
//
// The node ID is the 32-byte Ed25519 public key, written in Base58 (Bitcoin
// alphabet); the DID is "did:boson:" followed by that ID. The private key is
// stored as a PKCS#8 PEM file of mode 0600 (see WriteKeyFile).
//
// docs/identity.md has the same material plus fixed words -> DID vectors.
package identity

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mr-tron/base58"
)

// Derivation paths. Changing one changes every node's identity.
const (
	// NodeKeyPath derives the node's Ed25519 key: its ID, DID and libp2p
	// identity.
	NodeKeyPath = "m/44'/2305'/0'/0'/0'"
	// BackupKeyPath is reserved for the key that encrypts backups, so the
	// words alone give access to them on a new device.
	BackupKeyPath = "m/44'/2305'/1'/0'/0'"
	// Per-device keys are reserved at m/44'/2305'/2'/<device>'/0'.
)

// DIDPrefix is the DID method prefix for node IDs, in the form Boson uses.
const DIDPrefix = "did:boson:"

// ErrBadDID is wrapped by every ParseID, ParseDID and UnmarshalText error.
var ErrBadDID = errors.New("identity: bad DID")

// ID is a node ID: the node's Ed25519 public key.
type ID [32]byte

// IDFromPublicKey returns the ID of an Ed25519 public key.
func IDFromPublicKey(pub ed25519.PublicKey) (ID, error) {
	var id ID
	if len(pub) != ed25519.PublicKeySize {
		return id, fmt.Errorf("identity: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	copy(id[:], pub)
	return id, nil
}

// String returns the ID in Base58 (Bitcoin alphabet).
func (id ID) String() string { return base58.Encode(id[:]) }

// DID returns "did:boson:" + String().
func (id ID) DID() string { return DIDPrefix + id.String() }

// PublicKey returns the ID as an Ed25519 public key (a copy).
func (id ID) PublicKey() ed25519.PublicKey {
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	copy(pub, id[:])
	return pub
}

// MarshalText returns the DID form, so IDs read as DIDs in JSON and config.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.DID()), nil }

// UnmarshalText accepts the DID form only: a bare Base58 string in a config
// file is more likely a mistake (a key, a peer ID) than an ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseDID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// maxIDChars bounds the input we hand to the Base58 decoder, whose cost grows
// with the square of the length. A 32-byte value is 32 to 44 characters.
const maxIDChars = 64

// ParseID parses a bare Base58 node ID. It is strict: the string must decode
// to exactly 32 bytes and be the canonical encoding of them, so every ID has
// exactly one spelling. It does not check that the bytes are a point on the
// curve; a bad key simply never verifies a signature.
func ParseID(s string) (ID, error) {
	id, problem := parseID(s)
	if problem != "" {
		return ID{}, fmt.Errorf("%w: ID %s: %s", ErrBadDID, quote(s), problem)
	}
	return id, nil
}

// parseID returns the ID, or a description of what is wrong with s.
func parseID(s string) (ID, string) {
	var id ID
	if s == "" {
		return id, "empty ID"
	}
	for i := 0; i < len(s); i++ {
		if !isBase58(s[i]) {
			r, _ := utf8.DecodeRuneInString(s[i:])
			return id, fmt.Sprintf("invalid Base58 character %q at position %d of the ID (Base58 has no 0, O, I or l)", r, i+1)
		}
	}
	if len(s) > maxIDChars {
		return id, fmt.Sprintf("ID is %d characters long, want 32 to 44", len(s))
	}
	b, err := base58.Decode(s)
	if err != nil { // not expected after the character check
		return id, err.Error()
	}
	if len(b) != len(id) {
		return id, fmt.Sprintf("ID decodes to %d bytes, want %d", len(b), len(id))
	}
	copy(id[:], b)
	if c := id.String(); c != s {
		return ID{}, fmt.Sprintf("ID is not in canonical Base58 form (want %s)", c)
	}
	return id, ""
}

// ParseDID parses "did:boson:<base58 id>". The prefix must be exactly
// lowercase "did:boson:"; other DID methods and bare IDs are refused.
func ParseDID(s string) (ID, error) {
	if rest, ok := strings.CutPrefix(s, DIDPrefix); ok {
		id, problem := parseID(rest)
		if problem != "" {
			return ID{}, fmt.Errorf("%w: %s: %s", ErrBadDID, quote(s), problem)
		}
		return id, nil
	}
	if s == "" {
		return ID{}, fmt.Errorf("%w: empty string, want %s<base58 id>", ErrBadDID, DIDPrefix)
	}
	if len(s) >= len(DIDPrefix) && strings.EqualFold(s[:len(DIDPrefix)], DIDPrefix) {
		return ID{}, fmt.Errorf("%w: %s: the prefix must be lowercase %q", ErrBadDID, quote(s), DIDPrefix)
	}
	if len(s) >= 4 && strings.EqualFold(s[:4], "did:") {
		method, _, _ := strings.Cut(s[4:], ":")
		return ID{}, fmt.Errorf("%w: %s: DID method %s is not supported, want %s<base58 id>",
			ErrBadDID, quote(s), quote(method), DIDPrefix)
	}
	return ID{}, fmt.Errorf("%w: %s is not a DID, want %s<base58 id>", ErrBadDID, quote(s), DIDPrefix)
}

// ParseIDOrDID accepts either a DID or a bare Base58 ID, for command lines
// where both are convenient.
func ParseIDOrDID(s string) (ID, error) {
	if len(s) >= 4 && strings.EqualFold(s[:4], "did:") {
		return ParseDID(s)
	}
	return ParseID(s)
}

func isBase58(c byte) bool {
	switch {
	case c >= '1' && c <= '9':
		return true
	case c >= 'A' && c <= 'Z':
		return c != 'I' && c != 'O'
	case c >= 'a' && c <= 'z':
		return c != 'l'
	}
	return false
}

// quote quotes untrusted input for an error message, cut short so a huge
// input does not become a huge error.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
