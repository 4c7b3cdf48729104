package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	k, err := NodeKeyFromMnemonic(abandonArt, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFileRoundtrip(t *testing.T) {
	key := testKey(t)
	path := filepath.Join(t.TempDir(), "node.key")
	if err := WriteKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("mode got %04o, want 0600", got)
	}
	got, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(got) {
		t.Error("loaded key differs from the written one")
	}
	// Nothing left behind but the key.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(ents))
	}
	// Readable by openssl and friends: plain PKCS#8.
	data, _ := os.ReadFile(path)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("not a PRIVATE KEY PEM file:\n%s", data)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Error(err)
	}
}

func TestKeyFileRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteKeyFile("node.key", testKey(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile("node.key"); err != nil {
		t.Fatal(err)
	}
}

func TestKeyFileRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteKeyFile(path, testKey(t))
	if !errors.Is(err, ErrKeyExists) {
		t.Fatalf("got %v, want ErrKeyExists", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Errorf("existing file changed to %q", data)
	}
	// Also for a dangling symlink: link(2) does not follow it.
	link := filepath.Join(t.TempDir(), "link.key")
	if err := os.Symlink(filepath.Join(t.TempDir(), "missing"), link); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(link, testKey(t)); !errors.Is(err, ErrKeyExists) {
		t.Errorf("dangling symlink: got %v, want ErrKeyExists", err)
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
}

func TestKeyFileWriteErrors(t *testing.T) {
	if err := WriteKeyFile(filepath.Join(t.TempDir(), "no", "such", "dir", "k"), testKey(t)); err == nil {
		t.Error("missing directory: got no error")
	}
	if err := WriteKeyFile(filepath.Join(t.TempDir(), "k"), ed25519.PrivateKey(make([]byte, 32))); err == nil {
		t.Error("short key: got no error")
	}
}

func TestKeyFileRefusesLoosePermissions(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o601, 0o610} {
		path := filepath.Join(t.TempDir(), "node.key")
		if err := WriteKeyFile(path, testKey(t)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path)
		if !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("mode %04o: got %v, want ErrKeyPermissions", mode, err)
			continue
		}
		for _, want := range []string{path, "chmod 600"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %04o: error %q does not contain %q", mode, err, want)
			}
		}
	}
	// Owner-only modes other than 0600 are fine.
	path := filepath.Join(t.TempDir(), "node.key")
	if err := WriteKeyFile(path, testKey(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestKeyFileRefusesGarbage(t *testing.T) {
	good := func() []byte {
		der, err := x509.MarshalPKCS8PrivateKey(testKey(t))
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	der, _ := x509.MarshalPKCS8PrivateKey(testKey(t))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"text", []byte("hello\n"), "does not start with a PEM block"},
		{"leading garbage", append([]byte("junk\n"), good()...), "does not start with a PEM block"},
		{"trailing garbage", append(good(), "junk\n"...), "trailing data"},
		{"two blocks", append(good(), good()...), "trailing data"},
		{"truncated", good()[:50], "not a valid PEM block"},
		{"wrong type", pem.EncodeToMemory(&pem.Block{Type: "ED25519 PRIVATE KEY", Bytes: der}), `PEM block is "ED25519 PRIVATE KEY"`},
		{"headers", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: der}), "headers"},
		{"not PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not der")}), "not a PKCS#8 private key"},
		{"raw seed", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: testKey(t).Seed()}), "not a PKCS#8 private key"},
		{"ECDSA", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), "want an Ed25519 key"},
		{"DER trailing bytes", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: append(bytes.Clone(der), 0, 0)}), "not a canonical"},
		{"bad base64", bytes.Replace(good(), []byte("MC4C"), []byte("M!4C"), 1), "not a valid PEM block"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "node.key")
		if err := os.WriteFile(path, tt.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path)
		if !errors.Is(err, ErrKeyMalformed) {
			t.Errorf("%s: got %v, want ErrKeyMalformed", tt.name, err)
			continue
		}
		for _, want := range []string{path, tt.want} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not contain %q", tt.name, err, want)
			}
		}
	}

	// CRLF line ends and surrounding blank lines are accepted.
	path := filepath.Join(t.TempDir(), "node.key")
	crlf := append([]byte("\r\n"), bytes.ReplaceAll(good(), []byte("\n"), []byte("\r\n"))...)
	if err := os.WriteFile(path, crlf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err != nil {
		t.Errorf("CRLF file: %v", err)
	}

	// A directory or a missing file names the path.
	for _, p := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing.key")} {
		if _, err := LoadKeyFile(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("LoadKeyFile(%s) error %v does not name the path", p, err)
		}
	}
}

// TestLoadOrCreateKeyFile: a first boot makes the words, the backup
// password they give and the key, in that order of files; the next boot
// loads the key and makes nothing.
func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pc2", "node.key")
	if _, _, err := LoadOrCreateKeyFile(path, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("without create: %v", err)
	}
	key, created, err := LoadOrCreateKeyFile(path, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	words, err := os.ReadFile(WordsFile(path))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := NodeKeyFromMnemonic(strings.TrimSpace(string(words)), "")
	if !key.Equal(want) {
		t.Fatal("the key is not the words' key")
	}
	pw, err := os.ReadFile(BackupPasswordFile(path))
	wantPW, _ := BackupPasswordFromMnemonic(strings.TrimSpace(string(words)), "")
	if err != nil || strings.TrimSpace(string(pw)) != wantPW {
		t.Fatalf("backup password file %q %v, want the words' %s", pw, err, wantPW)
	}
	if fi, err := os.Stat(BackupPasswordFile(path)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup password file mode: %v %v", fi.Mode(), err)
	}
	again, created, err := LoadOrCreateKeyFile(path, true)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("second boot: created %v, %v", created, err)
	}
}
