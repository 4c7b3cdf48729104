package identity

import (
	"errors"
	"testing"
)

func FuzzParseDID(f *testing.F) {
	for _, v := range didVectors {
		f.Add(v.did)
	}
	f.Add("")
	f.Add("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseDID(s)
		if err != nil {
			if !errors.Is(err, ErrBadDID) {
				t.Fatalf("ParseDID(%q) error %v does not wrap ErrBadDID", s, err)
			}
			return
		}
		if got := id.DID(); got != s {
			t.Fatalf("ParseDID(%q) = %v, which formats as %q", s, id, got)
		}
		if got, err := ParseID(id.String()); err != nil || got != id {
			t.Fatalf("ParseID(%q) = %v, %v, want %v", id.String(), got, err, id)
		}
	})
}
