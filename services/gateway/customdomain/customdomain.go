// Package customdomain is the proof that ties an owner's own domain
// (cloud.example.org, or an apex) to a node's DID: a DNS TXT record at
// _pc2.<domain> holding the DID and its signature over the domain. Only
// whoever controls the domain's DNS can publish it, and only the DID's
// key can sign it, so a gateway that finds a valid one serves the domain
// for that node. Removing the record, or replacing it with another DID's
// proof, moves or stops the domain.
package customdomain

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/dht/records"
)

// Label is the DNS label under the domain that holds the proof.
const Label = "_pc2"

// version starts every proof, so that other TXT records at the same
// name are ignored and the format can change.
const version = "pc2-domain=1"

// tag separates these signatures from every other the key makes.
const tag = "pc2/custom-domain/v1\x00"

// Errors of Verify.
var (
	ErrNoProof  = errors.New("customdomain: no PC2 proof in the TXT record")
	ErrBadProof = errors.New("customdomain: the proof does not verify")
	ErrTwoDIDs  = errors.New("customdomain: proofs for two DIDs")
)

// TXTName is the DNS name of domain's proof.
func TXTName(domain string) string { return Label + "." + domain }

// Check reports whether domain may be a custom domain: a lowercase DNS
// name of at least two labels.
func Check(domain string) error {
	if err := records.ValidDomain(domain); err != nil {
		return fmt.Errorf("customdomain: %w", err)
	}
	return nil
}

func message(domain string, id identity.ID) []byte {
	return []byte(domain + "\x00" + id.String())
}

// Sign makes the TXT value that ties domain to key's DID.
func Sign(key ed25519.PrivateKey, domain string) (string, error) {
	if err := Check(domain); err != nil {
		return "", err
	}
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(key, append([]byte(tag), message(domain, id)...))
	return fmt.Sprintf("%s did=%s sig=%s", version, id.DID(), base64.RawURLEncoding.EncodeToString(sig)), nil
}

// Verify finds the proof among the TXT strings of TXTName(domain) and
// returns the DID it ties domain to. Strings that are not PC2 proofs are
// ignored; a proof that does not verify, or valid proofs for two DIDs,
// are errors.
func Verify(txts []string, domain string) (identity.ID, error) {
	var found identity.ID
	var seen bool
	for _, txt := range txts {
		fields := strings.Fields(txt)
		if len(fields) == 0 || fields[0] != version {
			continue
		}
		id, err := verifyOne(fields[1:], domain)
		if err != nil {
			return identity.ID{}, err
		}
		if seen && id != found {
			return identity.ID{}, fmt.Errorf("%w: %s and %s", ErrTwoDIDs, found.DID(), id.DID())
		}
		found, seen = id, true
	}
	if !seen {
		return identity.ID{}, ErrNoProof
	}
	return found, nil
}

// Refused says whether err is Verify's refusal of the TXT records
// (rather than a failure to read them).
func Refused(err error) bool {
	return errors.Is(err, ErrNoProof) || errors.Is(err, ErrBadProof) || errors.Is(err, ErrTwoDIDs)
}

func verifyOne(fields []string, domain string) (identity.ID, error) {
	var did, sig string
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "did":
			did = v
		case "sig":
			sig = v
		}
	}
	id, err := identity.ParseDID(did)
	if err != nil {
		return identity.ID{}, fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return identity.ID{}, fmt.Errorf("%w: malformed signature", ErrBadProof)
	}
	if !records.VerifyStatement(id, tag, message(domain, id), raw) {
		return identity.ID{}, fmt.Errorf("%w: not signed by %s for %s", ErrBadProof, id.DID(), domain)
	}
	return id, nil
}
