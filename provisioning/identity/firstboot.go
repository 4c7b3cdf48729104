package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pc2/pc2/internal/atomicfile"
)

// WordsFile is where LoadOrCreateKeyFile leaves the words of the key at
// keyPath.
func WordsFile(keyPath string) string { return keyPath + ".words" }

// BackupPasswordFile is where the device keeps the backup password of the
// key at keyPath (BackupPasswordFromMnemonic), written whenever it knows
// the words: the words themselves are not kept once the owner has
// confirmed them, and backups run unattended.
func BackupPasswordFile(keyPath string) string { return keyPath + ".backup" }

// WriteBackupPassword derives the backup password of the words and
// passphrase and writes it to BackupPasswordFile(keyPath) (mode 0600,
// atomically).
func WriteBackupPassword(keyPath, words, passphrase string) error {
	pw, err := BackupPasswordFromMnemonic(words, passphrase)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(BackupPasswordFile(keyPath), []byte(pw+"\n"), 0o600); err != nil {
		return fmt.Errorf("save the backup password: %w", err)
	}
	return nil
}

// LoadOrCreateKeyFile loads the key at path or, when it does not exist and
// create is set, makes a new identity (first boot of an appliance): it
// writes the 24 words to WordsFile(path) (mode 0600, for the owner to write
// down and then delete) before the key itself, so there is never a key
// whose words are lost. created reports whether a new key was made.
func LoadOrCreateKeyFile(path string, create bool) (key ed25519.PrivateKey, created bool, err error) {
	key, err = LoadKeyFile(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !create {
		return key, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	words, err := NewMnemonic(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	key, err = NodeKeyFromMnemonic(words, "")
	if err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	if err := atomicfile.Write(WordsFile(path), []byte(words+"\n"), 0o600); err != nil {
		return nil, false, fmt.Errorf("create identity: save words: %w", err)
	}
	if err := WriteBackupPassword(path, words, ""); err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	if err := WriteKeyFile(path, key); err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	return key, true, nil
}
