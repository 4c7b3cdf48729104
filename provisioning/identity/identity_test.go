package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mr-tron/base58"
)

var abandonArt = strings.Repeat("abandon ", 23) + "art"

// didVectors pin words + passphrase -> DID. They were computed with this
// package and cross-checked with an independent implementation (Python
// hashlib/hmac + pyca/cryptography). docs/identity.md lists the same table;
// changing any of them changes every node's identity.
var didVectors = []struct{ name, mnemonic, passphrase, did string }{
	{"abandon-art", abandonArt, "", "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"},
	{"legal-winner", "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title", "", "did:boson:23pycXzJuhEQDLSh8AyJ8QGfmCeLFK4sigcawy1F6tBj"},
	{"zoo-vote", "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote", "", "did:boson:2fFnKzFcFj8W76jTrLd9TUEPKWHed54vGyFrc5XHvdT9"},
	{"abandon-art+TREZOR", abandonArt, "TREZOR", "did:boson:EDRwA98Jxb4pzmgRUHePwYvFr4Xp3KZUkBTVhAqFLVpb"},
	{"dignity+passphrase", "dignity pass list indicate nasty swamp pool script soccer toe leaf photo multiply desk host tomato cradle drill spread actor shine dismiss champion exotic", "correct horse battery staple", "did:boson:4pMp9r9uewTuP8Z6Kd2JfYFpjmGwSxuhYmyEA5YQvUAD"},
	{"abandon-art+Grüße", abandonArt, "Gr\u00fc\u00dfe", "did:boson:4CdtMiJ4p9FqxtXwuNj72drHX3BqrRBaS9MX2Viu4aha"},
}

func TestDIDVectors(t *testing.T) {
	doc, err := os.ReadFile("../../docs/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range didVectors {
		key, err := NodeKeyFromMnemonic(v.mnemonic, v.passphrase)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		id, err := IDFromPublicKey(key.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		if got := id.DID(); got != v.did {
			t.Errorf("%s: got %s, want %s", v.name, got, v.did)
		}
		if !bytes.Contains(doc, []byte(v.did)) {
			t.Errorf("%s: docs/identity.md does not list %s", v.name, v.did)
		}
		parsed, err := ParseDID(v.did)
		if err != nil || parsed != id {
			t.Errorf("%s: ParseDID(%s) got %v, %v, want %v", v.name, v.did, parsed, err, id)
		}
		// The key must sign for the ID: it is the libp2p identity too.
		msg := []byte("pc2")
		if !ed25519.Verify(parsed.PublicKey(), msg, ed25519.Sign(key, msg)) {
			t.Errorf("%s: signature does not verify under the parsed ID", v.name)
		}
	}
}

func TestIDAndDIDForms(t *testing.T) {
	var id ID
	for i := range id {
		id[i] = byte(i * 7)
	}
	if got, want := id.DID(), DIDPrefix+id.String(); got != want {
		t.Errorf("DID() got %s, want %s", got, want)
	}
	for _, s := range []string{id.String(), id.DID()} {
		got, err := ParseIDOrDID(s)
		if err != nil || got != id {
			t.Errorf("ParseIDOrDID(%s) got %v, %v, want %v", s, got, err, id)
		}
	}
	if _, err := ParseID(id.DID()); !errors.Is(err, ErrBadDID) {
		t.Errorf("ParseID(DID) got %v, want ErrBadDID", err)
	}
	if _, err := ParseDID(id.String()); err == nil || !strings.Contains(err.Error(), "is not a DID") {
		t.Errorf("ParseDID(bare ID) got %v, want a not-a-DID error", err)
	}
	if _, err := IDFromPublicKey(make([]byte, 31)); err == nil {
		t.Error("IDFromPublicKey(31 bytes): got no error")
	}

	// The zero ID is 32 '1's: leading zero bytes are leading '1's.
	var zero ID
	if got, want := zero.String(), strings.Repeat("1", 32); got != want {
		t.Errorf("zero ID got %s, want %s", got, want)
	}
	if got, err := ParseID(strings.Repeat("1", 32)); err != nil || got != zero {
		t.Errorf("ParseID(32 ones) got %v, %v", got, err)
	}

	// JSON uses the DID form, and only accepts the DID form.
	j, err := json.Marshal(map[string]ID{"node": id})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"node":"` + id.DID() + `"}`; string(j) != want {
		t.Errorf("JSON got %s, want %s", j, want)
	}
	var back map[string]ID
	if err := json.Unmarshal(j, &back); err != nil || back["node"] != id {
		t.Errorf("JSON roundtrip got %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"node":"`+id.String()+`"}`), &back); !errors.Is(err, ErrBadDID) {
		t.Errorf("JSON with bare ID got %v, want ErrBadDID", err)
	}
}

func TestParseDIDErrors(t *testing.T) {
	valid := didVectors[0].did
	id := strings.TrimPrefix(valid, DIDPrefix)
	b31 := base58.Encode(bytes.Repeat([]byte{0xab}, 31))
	b33 := base58.Encode(bytes.Repeat([]byte{0xab}, 33))
	tests := []struct{ in, want string }{
		{"", "empty string"},
		{"hello", `"hello" is not a DID`},
		{id, "is not a DID"},
		{"did", "is not a DID"},
		{"boson:" + id, "is not a DID"},
		{"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", `DID method "key" is not supported`},
		{"did:web:example.com", `DID method "web" is not supported`},
		{"did:", `DID method "" is not supported`},
		{"did:bosonx:" + id, `DID method "bosonx" is not supported`},
		{"DID:BOSON:" + id, `the prefix must be lowercase "did:boson:"`},
		{"did:Boson:" + id, "must be lowercase"},
		{"did:boson:", "empty ID"},
		{"did:boson:" + id[:4] + "0" + id[5:], `invalid Base58 character '0' at position 5 of the ID`},
		{"did:boson:" + id[:9] + "l" + id[10:], `invalid Base58 character 'l' at position 10`},
		{"did:boson:" + id[:9] + "é" + id[10:], `invalid Base58 character 'é' at position 10`},
		{"did:boson:" + id + "\n", `invalid Base58 character '\n' at position 45`},
		{"did:boson: " + id, `invalid Base58 character ' ' at position 1`},
		{"did:boson:" + b31, "decodes to 31 bytes, want 32"},
		{"did:boson:" + b33, "decodes to 33 bytes, want 32"},
		{"did:boson:1" + id, "decodes to 33 bytes, want 32"},
		{"did:boson:" + strings.Repeat("z", 100), "ID is 100 characters long, want 32 to 44"},
		{"did:boson:" + strings.Repeat("z", 1<<20), "characters long"},
	}
	for _, tt := range tests {
		_, err := ParseDID(tt.in)
		if !errors.Is(err, ErrBadDID) {
			t.Errorf("ParseDID(%.60q) got %v, want ErrBadDID", tt.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseDID(%.60q) error %q does not contain %q", tt.in, err, tt.want)
		}
		if len(err.Error()) > 400 {
			t.Errorf("ParseDID(%.60q) error is %d bytes long", tt.in, len(err.Error()))
		}
	}
}

// TestBackupPasswordVectors: the backup repositories' password of fixed
// words (docs/identity.md lists them; cross-checked with an independent
// Python SLIP-0010 implementation), which differs from the node key.
func TestBackupPasswordVectors(t *testing.T) {
	doc, err := os.ReadFile("../../docs/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct{ words, pass, want string }{
		{abandonArt, "", "7d4fd76624c9fd3530afeb41eecae6f7e3eff0a5333549caa5f945ba009dbcf4"},
		{abandonArt, "TREZOR", "a2f19e616d49aebe3a19865f202724be82bede8060a11d01494be54c8d5558a2"},
		{strings.TrimSpace(strings.Repeat("zoo ", 23)) + " vote", "", "dba331f84fc4c4991b991332536beab48c210a187f9ac29b24b5453fbd32e87a"},
	} {
		got, err := BackupPasswordFromMnemonic(v.words, v.pass)
		if err != nil || got != v.want {
			t.Errorf("%.20s... %q: got %s %v, want %s", v.words, v.pass, got, err, v.want)
		}
		if !bytes.Contains(doc, []byte(v.want)) {
			t.Errorf("docs/identity.md does not list %s", v.want)
		}
		key, _ := NodeKeyFromMnemonic(v.words, v.pass)
		if strings.Contains(got, hex.EncodeToString(key.Seed())) {
			t.Error("the backup password is the node key")
		}
	}
	if _, err := BackupPasswordFromMnemonic("abandon abandon", ""); err == nil {
		t.Error("two words gave a backup password")
	}
}
