// Package password hashes and checks passwords with argon2id
// (golang.org/x/crypto/argon2, RFC 9106) in the PHC string format
// "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>" (unpadded
// standard Base64), the format other argon2 tools read and write.
//
// Parameters: m=19456 KiB, t=2, p=1, OWASP's first recommendation for
// argon2id. It takes ~60 ms on a Raspberry Pi 4 and 19 MiB of memory, so a
// login does not starve a 512 MB Pi Zero 2 W. Verify accepts other
// parameters (a hash made elsewhere) within bounds, so a crafted hash cannot
// make a check take gigabytes.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters of new hashes.
const (
	Memory  = 19 * 1024 // KiB
	Passes  = 2
	Lanes   = 1
	SaltLen = 16
	KeyLen  = 32
)

// Bounds Verify accepts.
const (
	maxMemory = 256 * 1024 // KiB
	maxPasses = 10
	maxLanes  = 16
	maxLen    = 1024 // bytes of password
)

// MinLength is the shortest password Hash accepts.
const MinLength = 8

// ErrMismatch means the password does not match the hash.
var ErrMismatch = errors.New("password: wrong password")

var b64 = base64.RawStdEncoding

// Hash returns the PHC string of a new argon2id hash of pw with a random
// salt.
func Hash(pw string) (string, error) {
	if len(pw) < MinLength {
		return "", fmt.Errorf("password: too short (at least %d characters)", MinLength)
	}
	if len(pw) > maxLen {
		return "", fmt.Errorf("password: too long (at most %d bytes)", maxLen)
	}
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, Passes, Memory, Lanes, KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, Memory, Passes, Lanes,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type params struct {
	m, t      uint32
	p         uint8
	salt, key []byte
}

func parse(hash string) (params, error) {
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return params{}, errors.New("password: not an argon2id PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash)")
	}
	var v int
	if _, err := fmt.Sscanf(f[2], "v=%d", &v); err != nil || v != argon2.Version {
		return params{}, fmt.Errorf("password: argon2 version %q not supported (want v=%d)", f[2], argon2.Version)
	}
	var p params
	var lanes uint32
	if n, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &p.m, &p.t, &lanes); err != nil || n != 3 ||
		fmt.Sprintf("m=%d,t=%d,p=%d", p.m, p.t, lanes) != f[3] {
		return params{}, fmt.Errorf("password: bad parameters %q", f[3])
	}
	if p.t < 1 || p.t > maxPasses || lanes < 1 || lanes > maxLanes || p.m < 8*lanes || p.m > maxMemory {
		return params{}, fmt.Errorf("password: parameters %q out of bounds", f[3])
	}
	p.p = uint8(lanes)
	var err error
	if p.salt, err = b64.DecodeString(f[4]); err != nil || len(p.salt) < 8 {
		return params{}, errors.New("password: bad salt")
	}
	if p.key, err = b64.DecodeString(f[5]); err != nil || len(p.key) < 16 || len(p.key) > 64 {
		return params{}, errors.New("password: bad hash")
	}
	return p, nil
}

// Check reports whether hash is a well-formed hash Verify can check.
func Check(hash string) error {
	_, err := parse(hash)
	return err
}

// Verify returns nil when pw matches hash, ErrMismatch when it does not,
// and another error when hash is malformed.
func Verify(hash, pw string) error {
	p, err := parse(hash)
	if err != nil {
		return err
	}
	if len(pw) > maxLen {
		return ErrMismatch
	}
	got := argon2.IDKey([]byte(pw), p.salt, p.t, p.m, p.p, uint32(len(p.key)))
	if subtle.ConstantTimeCompare(got, p.key) != 1 {
		return ErrMismatch
	}
	return nil
}
