package identity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Official BIP39 English vectors (24 words, passphrase "TREZOR") from
// https://github.com/trezor/python-mnemonic/blob/master/vectors.json.
var bip39Vectors = []struct{ mnemonic, seed string }{
	{
		"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
		"bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8",
	},
	{
		"legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title",
		"bc09fca1804f7e69da93c2f2028eb238c227f2e9dda30cd63699232578480a4021b146ad717fbb7e451ce9eb835f43620bf5c514db0f8add49f5d121449d3e87",
	},
	{
		"letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor acoustic bless",
		"c0c519bd0e91a2ed54357d9d1ebef6f5af218a153624cf4f2da911a0ed8f7a09e2ef61af0aca007096df430022f7a2b6fb91661a9589097069720d015e4e982f",
	},
	{
		"zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote",
		"dd48c104698c30cfe2b6142103248622fb7bb0ff692eebb00089b32d22484e1613912f0a5b694407be899ffd31ed3992c456cdf60f5d4564b8ba3f05a69890ad",
	},
	{
		"dignity pass list indicate nasty swamp pool script soccer toe leaf photo multiply desk host tomato cradle drill spread actor shine dismiss champion exotic",
		"ff7f3184df8696d8bef94b6c03114dbee0ef89ff938712301d27ed8336ca89ef9635da20af07d4175f2bf5f3de130f39c9d9e8dd0472489c19b1a020a940da67",
	},
	{
		"beyond stage sleep clip because twist token leaf atom beauty genius food business side grid unable middle armed observe pair crouch tonight away coconut",
		"b15509eaa2d09d3efd3e006ef42151b30367dc6e3aa5e44caba3fe4d3e352e65101fbdb86a96776b91946ff06f8eac594dc6ee1d3e82a42dfe1b40fef6bcc3fd",
	},
}

func TestBIP39Vectors(t *testing.T) {
	for _, v := range bip39Vectors {
		seed, err := SeedFromMnemonic(v.mnemonic, "TREZOR")
		if err != nil {
			t.Fatalf("SeedFromMnemonic(%.30q...): %v", v.mnemonic, err)
		}
		if got := hex.EncodeToString(seed); got != v.seed {
			t.Errorf("seed of %.30q...: got %s, want %s", v.mnemonic, got, v.seed)
		}
	}
}

func TestMnemonicNormalisesWhitespaceAndCase(t *testing.T) {
	v := bip39Vectors[1]
	messy := "  " + strings.ToUpper(strings.ReplaceAll(v.mnemonic, " ", " \n\t ")) + "\r\n"
	seed, err := SeedFromMnemonic(messy, "TREZOR")
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(seed); got != v.seed {
		t.Errorf("got %s, want %s", got, v.seed)
	}
}

func TestMnemonicPassphraseNFKD(t *testing.T) {
	nfc, err := SeedFromMnemonic(bip39Vectors[0].mnemonic, "Gr\u00fc\u00dfe")
	if err != nil {
		t.Fatal(err)
	}
	nfd, err := SeedFromMnemonic(bip39Vectors[0].mnemonic, "Gru\u0308\u00dfe")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(nfc, nfd) {
		t.Error("composed and decomposed passphrases give different seeds")
	}
}

func TestMnemonicErrors(t *testing.T) {
	words := strings.Fields(bip39Vectors[4].mnemonic) // dignity pass list ...
	with := func(i int, w string) string {
		c := append([]string(nil), words...)
		c[i] = w
		return strings.Join(c, " ")
	}
	tests := []struct {
		name, mnemonic string
		want           []string
	}{
		{"empty", "", []string{"got 0 words, want 24"}},
		{"12 words", "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", []string{"got 12 words, want 24"}},
		{"25 words", bip39Vectors[0].mnemonic + " art", []string{"got 25 words, want 24"}},
		{"unknown word", with(6, "pool2"), []string{`word 7 "pool2" is not in the BIP39 English word list`}},
		{"misspelt word", with(9, "soccr"), []string{`word 10 "soccr"`, `did you mean "soccer"?`}},
		{"comma", strings.Join(words, ", "), []string{`word 1 "dignity,"`}},
		// A valid word in the wrong place breaks the checksum.
		{"changed word", with(3, "indoor"), []string{"checksum mismatch"}},
		{"swapped words", with(0, "pass"), []string{"checksum mismatch"}},
	}
	for _, tt := range tests {
		_, err := SeedFromMnemonic(tt.mnemonic, "")
		if !errors.Is(err, ErrBadMnemonic) {
			t.Errorf("%s: got %v, want an error wrapping ErrBadMnemonic", tt.name, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tt.name, err, w)
			}
		}
		if tt.name == "changed word" && strings.Contains(err.Error(), "not in the BIP39") {
			t.Errorf("%s: checksum error %q reads like an unknown word error", tt.name, err)
		}
	}
}

func TestNewMnemonic(t *testing.T) {
	// Zero entropy gives the all-"abandon ... art" phrase.
	m, err := NewMnemonic(bytes.NewReader(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	if m != bip39Vectors[0].mnemonic {
		t.Errorf("got %q, want %q", m, bip39Vectors[0].mnemonic)
	}
	m, err = NewMnemonic(nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(m)); n != 24 {
		t.Errorf("got %d words, want 24", n)
	}
	if _, err := SeedFromMnemonic(m, ""); err != nil {
		t.Errorf("fresh mnemonic does not check: %v", err)
	}
	if _, err := NewMnemonic(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Error("short entropy source: got no error")
	}
}
