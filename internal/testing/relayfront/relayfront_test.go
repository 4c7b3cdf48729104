package relayfront

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/pc2/pc2/provisioning/identity"
)

func TestHostLabel(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	l := HostLabel(id)
	if len(l) > 63 || strings.ToLower(l) != l {
		t.Fatalf("label %q", l)
	}
	back, err := ParseHostLabel(strings.ToUpper(l))
	if err != nil || back != id {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "abc", "www", l[:51] + "1"} {
		if _, err := ParseHostLabel(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
