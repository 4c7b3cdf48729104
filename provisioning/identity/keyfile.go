package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pc2/pc2/internal/atomicfile"
)

// Key file errors.
var (
	ErrKeyExists      = errors.New("identity: key file already exists")
	ErrKeyPermissions = errors.New("identity: key file permissions too open")
	ErrKeyMalformed   = errors.New("identity: malformed key file")
)

const pemType = "PRIVATE KEY"

// maxKeyFile bounds what LoadKeyFile reads; a real key file is 119 bytes.
const maxKeyFile = 64 << 10

// WriteKeyFile writes key to path as a PKCS#8 PEM file of mode 0600. It never
// replaces an existing file (the error wraps ErrKeyExists): losing a node key
// loses the node's identity unless its words are at hand. The write is atomic
// and durable: the key goes to a temporary file in the same directory, is
// fsynced, then hard-linked into place (link fails if path exists, unlike
// rename) and the directory is fsynced. The directory's file system must
// support hard links.
func WriteKeyFile(path string, key ed25519.PrivateKey) (err error) {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("identity: write key %s: private key is %d bytes, want %d", path, len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	block := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
	defer clear(der)
	defer clear(block)

	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s (refusing to overwrite it)", ErrKeyExists, path)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp) // after a successful link the key lives on under path
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	if _, err := f.Write(block); err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s (refusing to overwrite it)", ErrKeyExists, path)
		}
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("identity: write key %s: %w", path, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("identity: write key %s: sync directory: %w", path, err)
	}
	return nil
}

// LoadKeyFile reads a key written by WriteKeyFile. It refuses a file that
// group or others may access in any way (ErrKeyPermissions) and anything but
// exactly one canonical PKCS#8 Ed25519 "PRIVATE KEY" PEM block, optionally
// surrounded by whitespace (ErrKeyMalformed).
func LoadKeyFile(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: load key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (mode %v)", ErrKeyMalformed, path, st.Mode())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, readable or writable by group or others; run: chmod 600 %s",
			ErrKeyPermissions, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("identity: load key %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKeyMalformed, path, maxKeyFile)
	}
	key, problem := parseKeyPEM(data)
	if problem != "" {
		return nil, fmt.Errorf("%w: %s: %s", ErrKeyMalformed, path, problem)
	}
	return key, nil
}

// parseKeyPEM returns the key, or a description of what is wrong with data.
func parseKeyPEM(data []byte) (ed25519.PrivateKey, string) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, "file is empty"
	}
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, "does not start with a PEM block"
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, "not a valid PEM block"
	}
	if len(rest) != 0 {
		return nil, "trailing data after the PEM block"
	}
	if block.Type != pemType {
		return nil, fmt.Sprintf("PEM block is %q, want %q (PKCS#8)", block.Type, pemType)
	}
	if len(block.Headers) != 0 {
		return nil, "PEM block has headers (encrypted keys are not supported)"
	}
	// pem.Decode skips lines it cannot parse; the file must be exactly one
	// block in standard layout (LF or CRLF line ends).
	reenc := pem.EncodeToMemory(block)
	defer clear(reenc)
	if !bytes.Equal(bytes.TrimSpace(reenc), bytes.ReplaceAll(trimmed, []byte("\r\n"), []byte("\n"))) {
		return nil, "not a single PEM block in standard layout"
	}
	defer clear(block.Bytes)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Sprintf("not a PKCS#8 private key: %v", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Sprintf("key is %T, want an Ed25519 key", k)
	}
	// x509 ignores bytes after the DER structure; insist on the one
	// encoding WriteKeyFile produces.
	canon, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil || !bytes.Equal(canon, block.Bytes) {
		return nil, "not a canonical PKCS#8 Ed25519 key (trailing or extra data)"
	}
	clear(canon)
	return key, ""
}
