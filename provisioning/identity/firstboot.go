package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LoadOrCreateKeyFile loads the key at path or, when it does not exist and
// create is set, makes a new identity (first boot of an appliance): it
// writes the 24 words to wordsPath (mode 0600, for the owner to write down
// and then delete) before the key itself, so there is never a key whose
// words are lost. created reports whether a new key was made.
func LoadOrCreateKeyFile(path, wordsPath string, create bool) (key ed25519.PrivateKey, created bool, err error) {
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
	if err := writePrivateFile(wordsPath, []byte(words+"\n")); err != nil {
		return nil, false, fmt.Errorf("create identity: save words: %w", err)
	}
	if err := WriteKeyFile(path, key); err != nil {
		return nil, false, fmt.Errorf("create identity: %w", err)
	}
	return key, true, nil
}

// writePrivateFile replaces path atomically with a 0600 file.
func writePrivateFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
