package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tyler-smith/go-bip39"
	"golang.org/x/text/unicode/norm"
)

// ErrBadMnemonic is wrapped by every error about the recovery words.
var ErrBadMnemonic = errors.New("identity: bad recovery phrase")

// MnemonicWords is the number of words in a recovery phrase: 256 bits of
// entropy plus an 8-bit checksum, 11 bits a word.
const MnemonicWords = 24

// NewMnemonic returns 24 fresh BIP39 English words drawn from rand (nil means
// crypto/rand).
func NewMnemonic(rand io.Reader) (string, error) {
	if rand == nil {
		rand = cryptoRand
	}
	entropy := make([]byte, 32)
	defer clear(entropy)
	if _, err := io.ReadFull(rand, entropy); err != nil {
		return "", fmt.Errorf("identity: read entropy: %w", err)
	}
	m, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return "", fmt.Errorf("identity: new mnemonic: %w", err)
	}
	return m, nil
}

var cryptoRand = rand.Reader

// SeedFromMnemonic checks the 24 words and returns the 64-byte BIP39 seed.
// Whitespace between words is normalised and words are lowercased, so a phrase
// copied with line breaks or capitals still restores; the passphrase is
// NFKD-normalised as BIP39 requires and is otherwise used as given.
func SeedFromMnemonic(mnemonic, passphrase string) ([]byte, error) {
	words := strings.Fields(mnemonic)
	if len(words) != MnemonicWords {
		return nil, fmt.Errorf("%w: got %d words, want %d", ErrBadMnemonic, len(words), MnemonicWords)
	}
	for i, w := range words {
		w = strings.ToLower(w)
		words[i] = w
		if _, ok := bip39.GetWordIndex(w); !ok {
			return nil, fmt.Errorf("%w: word %d %q is not in the BIP39 English word list%s",
				ErrBadMnemonic, i+1, w, suggest(w))
		}
	}
	// Not bip39.NewSeedWithErrorChecking: it reports a bad checksum as
	// "Invalid mnenomic", which is no help to someone typing in 24 words.
	phrase := strings.Join(words, " ")
	entropy, err := bip39.EntropyFromMnemonic(phrase)
	clear(entropy)
	if errors.Is(err, bip39.ErrChecksumIncorrect) {
		return nil, fmt.Errorf("%w: checksum mismatch: every word is in the list, but one is wrong or the order is wrong", ErrBadMnemonic)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMnemonic, err)
	}
	seed := bip39.NewSeed(phrase, norm.NFKD.String(passphrase))
	return seed, nil
}

// suggest names the list word that starts with the same four letters as w,
// if there is one: the first four letters identify a BIP39 English word.
func suggest(w string) string {
	if len(w) < 4 {
		return ""
	}
	for _, c := range bip39.GetWordList() {
		if strings.HasPrefix(c, w[:4]) {
			return fmt.Sprintf(" (did you mean %q?)", c)
		}
	}
	return ""
}

// NodeKeyFromMnemonic derives the node key (NodeKeyPath) from the words and
// passphrase.
func NodeKeyFromMnemonic(mnemonic, passphrase string) (ed25519.PrivateKey, error) {
	seed, err := SeedFromMnemonic(mnemonic, passphrase)
	if err != nil {
		return nil, err
	}
	defer clear(seed)
	path, err := ParsePath(NodeKeyPath)
	if err != nil {
		return nil, err
	}
	k, _, err := DeriveEd25519(seed, path)
	if err != nil {
		return nil, err
	}
	defer clear(k[:])
	return ed25519.NewKeyFromSeed(k[:]), nil
}

// BackupPasswordFromMnemonic derives the password of the node's backup
// repositories from the words and passphrase: the lower-case hex of the
// 32-byte SLIP-0010 key at BackupKeyPath. The words alone (with the
// backup's location) open every backup on a fresh device, and the node
// key reveals nothing about it.
func BackupPasswordFromMnemonic(mnemonic, passphrase string) (string, error) {
	seed, err := SeedFromMnemonic(mnemonic, passphrase)
	if err != nil {
		return "", err
	}
	defer clear(seed)
	path, err := ParsePath(BackupKeyPath)
	if err != nil {
		return "", err
	}
	k, _, err := DeriveEd25519(seed, path)
	if err != nil {
		return "", err
	}
	defer clear(k[:])
	return hex.EncodeToString(k[:]), nil
}
