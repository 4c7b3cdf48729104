package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/provisioning/identity"
)

// Vectors from docs/identity.md.
var (
	abandonArt          = strings.Repeat("abandon ", 23) + "art"
	abandonArtDID       = "did:boson:6T4CWb3fo5ufzi8XoLa6GCF3mH65zNRy1E5wGNVGzdDG"
	abandonArtTrezorDID = "did:boson:EDRwA98Jxb4pzmgRUHePwYvFr4Xp3KZUkBTVhAqFLVpb"
)

type identityRun struct {
	stdout, stderr string
	err            error
}

func runIdentityCmd(t testing.TB, stdin string, args ...string) identityRun {
	t.Helper()
	var out, errb bytes.Buffer
	err := Execute(context.Background(), append([]string{"identity"}, args...), Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
	})
	t.Logf("pc2 identity %s: err=%v\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	return identityRun{out.String(), errb.String(), err}
}

func TestIdentityNewThenShow(t *testing.T) {
	key := filepath.Join(t.TempDir(), "node.key")
	r := runIdentityCmd(t, "", "new", "--key", key)
	if r.err != nil {
		t.Fatal(r.err)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("new printed %d lines, want 2", len(lines))
	}
	did := lines[0]
	if _, err := identity.ParseDID(did); err != nil {
		t.Errorf("first line %q is not a DID: %v", did, err)
	}
	words, ok := strings.CutPrefix(lines[1], "recovery phrase: ")
	if !ok || len(strings.Fields(words)) != 24 {
		t.Errorf("second line got %q, want \"recovery phrase: \" and 24 words", lines[1])
	}
	if !strings.Contains(r.stderr, "Write the 24 words down") {
		t.Errorf("stderr got %q, want a warning to write the words down", r.stderr)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v, want mode 0600", st, err)
	}

	s := runIdentityCmd(t, "", "show", "--key", key)
	if s.err != nil {
		t.Fatal(s.err)
	}
	id := strings.TrimPrefix(did, identity.DIDPrefix)
	if want := did + "\nid: " + id + "\nkey: " + key + "\n"; s.stdout != want {
		t.Errorf("show got %q, want %q", s.stdout, want)
	}

	// The printed words restore the same DID.
	key2 := filepath.Join(t.TempDir(), "node.key")
	if r := runIdentityCmd(t, words+"\n", "restore", "--key", key2); r.err != nil || firstLine(r.stdout) != did {
		t.Errorf("restore from printed words got %q, %v, want %s", firstLine(r.stdout), r.err, did)
	}
}

func TestIdentityNewRefusesOverwrite(t *testing.T) {
	key := filepath.Join(t.TempDir(), "node.key")
	if r := runIdentityCmd(t, "", "new", "--key", key); r.err != nil {
		t.Fatal(r.err)
	}
	before, _ := os.ReadFile(key)
	r := runIdentityCmd(t, "", "new", "--key", key)
	if !errors.Is(r.err, identity.ErrKeyExists) || !strings.Contains(r.err.Error(), "already exists") || !strings.Contains(r.err.Error(), key) {
		t.Errorf("second new got %v, want a key file already exists error naming %s", r.err, key)
	}
	if r.stdout != "" {
		t.Errorf("failed new printed %q, want nothing", r.stdout)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Error("key file changed")
	}
	// restore refuses too, before reading any words.
	r = runIdentityCmd(t, abandonArt, "restore", "--key", key)
	if !errors.Is(r.err, identity.ErrKeyExists) {
		t.Errorf("restore over existing key got %v, want ErrKeyExists", r.err)
	}
}

func TestIdentityRestoreVector(t *testing.T) {
	key := filepath.Join(t.TempDir(), "node.key")
	// Words as people paste them: line breaks, extra spaces, capitals.
	stdin := "  Abandon abandon abandon abandon abandon abandon\nabandon abandon abandon abandon abandon abandon\n" +
		"abandon  abandon abandon abandon abandon abandon\r\nabandon abandon abandon abandon abandon ART\n"
	r := runIdentityCmd(t, stdin, "restore", "--key", key)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := firstLine(r.stdout); got != abandonArtDID {
		t.Errorf("restore got %s, want %s", got, abandonArtDID)
	}
	if s := runIdentityCmd(t, "", "show", "--key", key); firstLine(s.stdout) != abandonArtDID {
		t.Errorf("show got %q, want %s", firstLine(s.stdout), abandonArtDID)
	}
}

func TestIdentityRestorePassphraseFile(t *testing.T) {
	dir := t.TempDir()
	for name, contents := range map[string]string{
		"plain":   "TREZOR",
		"newline": "TREZOR\n",
		"crlf":    "TREZOR\r\n",
	} {
		pf := filepath.Join(dir, name+".pass")
		if err := os.WriteFile(pf, []byte(contents), 0o600); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, name+".key")
		r := runIdentityCmd(t, abandonArt, "restore", "--key", key, "--passphrase-file", pf)
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		if got := firstLine(r.stdout); got != abandonArtTrezorDID {
			t.Errorf("%s: got %s, want %s", name, got, abandonArtTrezorDID)
		}
	}
	// Only one newline is removed: a second one is part of the passphrase.
	pf := filepath.Join(dir, "two.pass")
	if err := os.WriteFile(pf, []byte("TREZOR\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runIdentityCmd(t, abandonArt, "restore", "--key", filepath.Join(dir, "two.key"), "--passphrase-file", pf)
	if r.err != nil || firstLine(r.stdout) == abandonArtTrezorDID || firstLine(r.stdout) == abandonArtDID {
		t.Errorf("passphrase \"TREZOR\\n\" got %q, %v, want a third DID", firstLine(r.stdout), r.err)
	}
	r = runIdentityCmd(t, abandonArt, "restore", "--key", filepath.Join(dir, "x.key"), "--passphrase-file", filepath.Join(dir, "missing"))
	if r.err == nil || !strings.Contains(r.err.Error(), "passphrase file") {
		t.Errorf("missing passphrase file got %v", r.err)
	}
}

func TestIdentityRestoreBadWords(t *testing.T) {
	words := strings.Fields(abandonArt)
	with := func(i int, w string) string {
		c := append([]string(nil), words...)
		c[i] = w
		return strings.Join(c, " ")
	}
	tests := []struct{ name, stdin, want string }{
		{"changed to a non-word", with(4, "abandn"), `word 5 "abandn" is not in the BIP39 English word list (did you mean "abandon"?)`},
		{"bad checksum", with(23, "zoo"), "checksum mismatch"},
		{"23 words", strings.Join(words[1:], " "), "got 23 words, want 24"},
		{"nothing", "", "got 0 words, want 24"},
	}
	for _, tt := range tests {
		key := filepath.Join(t.TempDir(), "node.key")
		r := runIdentityCmd(t, tt.stdin, "restore", "--key", key)
		if !errors.Is(r.err, identity.ErrBadMnemonic) || !strings.Contains(r.err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, r.err, tt.want)
		}
		if ExitCode(r.err) != 1 {
			t.Errorf("%s: exit code %d, want 1", tt.name, ExitCode(r.err))
		}
		if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: key file written anyway", tt.name)
		}
	}
}

func TestIdentityUsageErrors(t *testing.T) {
	key := filepath.Join(t.TempDir(), "node.key")
	tests := []struct {
		args []string
		want string
	}{
		{nil, "want a subcommand"},
		{[]string{"frobnicate"}, "unknown subcommand"},
		{[]string{"new"}, "--key FILE is required"},
		{[]string{"restore"}, "--key FILE is required"},
		{[]string{"show"}, "--key FILE is required"},
		{[]string{"new", "--bogus"}, "flag provided but not defined"},
		{[]string{"show", "--key", key, "--passphrase-file", "x"}, "flag provided but not defined"},
		{[]string{"restore", "--key", key, "abandon", "art"}, "words are read from stdin"},
		{append([]string{"restore", "--key", key}, strings.Fields(abandonArt)...), "words are read from stdin"},
	}
	for _, tt := range tests {
		r := runIdentityCmd(t, abandonArt, tt.args...)
		if ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), tt.want) {
			t.Errorf("identity %q: got exit %d, %v, want exit 2 and %q", tt.args, ExitCode(r.err), r.err, tt.want)
		}
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Error("a usage error wrote a key file")
	}
}

func TestIdentityShowRefusesBadKeyFile(t *testing.T) {
	key := filepath.Join(t.TempDir(), "node.key")
	if r := runIdentityCmd(t, abandonArt, "restore", "--key", key); r.err != nil {
		t.Fatal(r.err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runIdentityCmd(t, "", "show", "--key", key)
	if !errors.Is(r.err, identity.ErrKeyPermissions) || !strings.Contains(r.err.Error(), "chmod 600") {
		t.Errorf("show 0644 key got %v, want ErrKeyPermissions saying chmod 600", r.err)
	}
	r = runIdentityCmd(t, "", "show", "--key", filepath.Join(t.TempDir(), "missing.key"))
	if r.err == nil || r.stdout != "" {
		t.Errorf("show missing key got %q, %v, want an error", r.stdout, r.err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestIdentityBackupPassword: the password of the identity's backups, for
// stock restic, is docs/identity.md's vector.
func TestIdentityBackupPassword(t *testing.T) {
	r := runIdentityCmd(t, "Abandon "+strings.Repeat("abandon ", 22)+"art\n", "backup-password")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got, want := strings.TrimSpace(r.stdout), "7d4fd76624c9fd3530afeb41eecae6f7e3eff0a5333549caa5f945ba009dbcf4"; got != want {
		t.Errorf("backup-password = %q, want %s", got, want)
	}
	if r := runIdentityCmd(t, "abandon abandon\n", "backup-password"); r.err == nil {
		t.Error("two words gave a password")
	}
	if r := runIdentityCmd(t, "", "backup-password", "abandon"); r.err == nil {
		t.Error("words on the command line were taken")
	}
}
