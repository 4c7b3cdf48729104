package identity

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Hardened is added to an index to make it hardened (written i').
const Hardened uint32 = 1 << 31

// ParsePath parses a BIP32-style path such as "m/44'/2305'/0'/0'/0'" into
// indices with the Hardened bit set. Every component must be hardened (' or
// h): SLIP-0010 has no non-hardened derivation for Ed25519. "m" alone is the
// master key.
func ParsePath(p string) ([]uint32, error) {
	parts := strings.Split(p, "/")
	if parts[0] != "m" {
		return nil, fmt.Errorf("identity: path %q: must start with \"m\"", p)
	}
	if len(parts)-1 > 255 {
		return nil, fmt.Errorf("identity: path %q: %d levels, at most 255", p, len(parts)-1)
	}
	path := make([]uint32, 0, len(parts)-1)
	for i, c := range parts[1:] {
		num, hard := strings.CutSuffix(c, "'")
		if !hard {
			num, hard = strings.CutSuffix(c, "h")
		}
		if num == "" || (len(num) > 1 && num[0] == '0') || strings.TrimLeft(num, "0123456789") != "" {
			return nil, fmt.Errorf("identity: path %q: level %d %q is not an index", p, i+1, c)
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil || uint32(n) >= Hardened {
			return nil, fmt.Errorf("identity: path %q: level %d index %s is out of range (0 to %d)", p, i+1, num, Hardened-1)
		}
		if !hard {
			return nil, fmt.Errorf("identity: path %q: level %d %q is not hardened; SLIP-0010 Ed25519 derives hardened keys only (write %s')", p, i+1, c, num)
		}
		path = append(path, uint32(n)|Hardened)
	}
	return path, nil
}

// DeriveEd25519 derives the SLIP-0010 Ed25519 private key (the 32-byte
// Ed25519 seed, as taken by ed25519.NewKeyFromSeed) and chain code at path
// from a 16 to 64 byte seed. Every index must have the Hardened bit set.
func DeriveEd25519(seed []byte, path []uint32) (key [32]byte, chainCode [32]byte, err error) {
	if len(seed) < 16 || len(seed) > 64 {
		return key, chainCode, fmt.Errorf("identity: SLIP-0010 seed is %d bytes, want 16 to 64", len(seed))
	}
	for i, idx := range path {
		if idx < Hardened {
			return key, chainCode, fmt.Errorf("identity: path level %d index %d is not hardened; SLIP-0010 Ed25519 derives hardened keys only", i+1, idx)
		}
	}
	// Master key: I = HMAC-SHA512(Key = "ed25519 seed", Data = seed).
	mac := hmac.New(sha512.New, []byte("ed25519 seed"))
	mac.Write(seed)
	var sum [64]byte
	mac.Sum(sum[:0])
	copy(key[:], sum[:32])
	copy(chainCode[:], sum[32:])

	// Hardened child: I = HMAC-SHA512(Key = c_par, Data = 0x00 || k_par || ser32(i)).
	var data [1 + 32 + 4]byte
	for _, idx := range path {
		copy(data[1:33], key[:])
		binary.BigEndian.PutUint32(data[33:], idx)
		mac := hmac.New(sha512.New, chainCode[:])
		mac.Write(data[:])
		mac.Sum(sum[:0])
		copy(key[:], sum[:32])
		copy(chainCode[:], sum[32:])
	}
	clear(sum[:])
	clear(data[:])
	return key, chainCode, nil
}
