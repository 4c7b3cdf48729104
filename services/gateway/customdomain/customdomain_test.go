package customdomain

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
)

func TestSignVerify(t *testing.T) {
	_, alice, _ := ed25519.GenerateKey(nil)
	_, bob, _ := ed25519.GenerateKey(nil)
	proof, err := Sign(alice, "cloud.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(proof) > 255 {
		t.Fatalf("proof of %d bytes: more than one TXT string", len(proof))
	}
	bobs, _ := Sign(bob, "cloud.example.org")
	id, err := Verify([]string{"v=spf1 -all", proof, proof}, "cloud.example.org")
	if err != nil || !ed25519.PublicKey(id.PublicKey()).Equal(alice.Public()) {
		t.Fatalf("Verify: %v %v", id, err)
	}
	for name, tc := range map[string]struct {
		txts   []string
		domain string
		want   error
	}{
		"no proof":             {[]string{"v=spf1 -all"}, "cloud.example.org", ErrNoProof},
		"another domain":       {[]string{proof}, "www.example.org", ErrBadProof},
		"two DIDs":             {[]string{proof, bobs}, "cloud.example.org", ErrTwoDIDs},
		"alice's DID, bob sig": {[]string{strings.Replace(bobs, didField(bobs), didField(proof), 1)}, "cloud.example.org", ErrBadProof},
		"malformed signature":  {[]string{proof[:len(proof)-4]}, "cloud.example.org", ErrBadProof},
		"no DID":               {[]string{"pc2-domain=1 sig=abc"}, "cloud.example.org", ErrBadProof},
	} {
		if _, err := Verify(tc.txts, tc.domain); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	if _, err := Sign(alice, "localhost"); err == nil {
		t.Error("a proof for a single-label name")
	}
}

func didField(proof string) string {
	for _, f := range strings.Fields(proof) {
		if strings.HasPrefix(f, "did=") {
			return f
		}
	}
	return ""
}
