package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/services/dht"
	"github.com/pc2/pc2/services/dht/records"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// noStore is a NameStore for tests that never reach the DHT.
type noStore struct{}

func (noStore) CurrentName(context.Context, string) (*records.Name, error) {
	return nil, dht.ErrNotFound
}

func (noStore) Publish(context.Context, string, []byte) (dht.PutResult, error) {
	return dht.PutResult{}, errors.New("noStore: no publishing")
}

// FuzzReadClaim: the names API's request bodies come from anyone on the
// internet. Whatever readClaim accepts is a claim signed by its DID's
// key, for the action asked, under the domain served, issued within the
// claim window; everything else is a refusal with an HTTP status, never
// a panic.
func FuzzReadClaim(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	seed := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	for _, c := range []struct {
		name   string
		action records.Action
		at     time.Time
	}{
		{"alice." + testDomain, records.ActionHold, now},
		{"alice." + testDomain, records.ActionRelease, now},
		{"alice.other.test", records.ActionHold, now},
		{"alice." + testDomain, records.ActionHold, now.Add(-time.Hour)},
	} {
		sc, err := namesapi.SignClaim(seed, c.name, c.action, c.at)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(namesapi.ClaimRequest{Claim: sc, Invite: "code"})
		f.Add(b)
	}
	// The first seed is a good claim: the accepting path is reached.
	first, _ := namesapi.SignClaim(seed, "alice."+testDomain, records.ActionHold, now)
	good, _ := json.Marshal(namesapi.ClaimRequest{Claim: first})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"claim":{"body":"","sig":""},"extra":1}`))
	f.Add([]byte(`{"claim":{"body":"AAAA","sig":"AAAA"}}{}`))
	n, err := NewNames(NamesConfig{Store: noStore{}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := n.readClaim(httptest.NewRequest("POST", "/api/names", bytes.NewReader(good)), testDomain, records.ActionHold); err != nil {
		f.Fatalf("a good claim: %v", err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/api/names", bytes.NewReader(body))
		_, c, err := n.readClaim(r, testDomain, records.ActionHold)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 {
				t.Fatalf("refusal without an HTTP status: %v", err)
			}
			return
		}
		if c.Action != records.ActionHold {
			t.Fatalf("accepted a claim for another action: %+v", c)
		}
		if _, d, _ := records.SplitName(c.Name); d != testDomain {
			t.Fatalf("accepted a claim under another domain: %+v", c)
		}
		if issued := time.Unix(c.IssuedAt, 0); issued.After(now.Add(records.DefaultClockSkew)) || now.Sub(issued) > n.cfg.ClaimWindow {
			t.Fatalf("accepted a claim issued at %v (now %v)", issued, now)
		}
	})
}

// FuzzSkeletonOf: claimed labels come from anyone. skeletonOf never
// panics; what it accepts has a skeleton that is its own fixed point (two
// labels that look alike meet at one key), and an internationalized label
// it accepts is valid IDNA of a single script whose skeleton is not plain
// ASCII.
func FuzzSkeletonOf(f *testing.F) {
	for _, s := range []string{"alice", "paypa1", "rnicrosoft", "xn--80ak6aa92e", "xn--pypal-4ve", "xn--bcher-kva", "xn--e1afmkfd", "xn--zz", "xn--", "a-b-c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, label string) {
		if records.ValidLabel(label) != nil {
			return // the names API refuses these before
		}
		key, err := skeletonOf(label)
		if err != nil {
			return
		}
		if again, err := skeletonOf(key); err == nil && again != key && isASCII(key) {
			t.Fatalf("skeleton %q of %q is not its own skeleton (%q)", key, label, again)
		}
		if strings.HasPrefix(label, "xn--") && isASCII(key) {
			t.Fatalf("internationalized %q accepted with an ASCII skeleton %q", label, key)
		}
	})
}

func (noStore) Unpublish(string) {}

func (noStore) CurrentTally(context.Context, string, string) (*records.Tally, error) {
	return nil, dht.ErrNotFound
}
