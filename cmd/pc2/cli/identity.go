package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pc2/pc2/provisioning/identity"
)

func init() { register("identity", "create, restore or show a node identity", runIdentity) }

const identityUsage = `usage:
  pc2 identity new     --key FILE [--passphrase-file F]
  pc2 identity restore --key FILE [--passphrase-file F]  < words
  pc2 identity show    --key FILE
  pc2 identity backup-password [--passphrase-file F]  < words`

// Output contract (other tools parse it): the first line of stdout is the
// DID for new, restore and show (backup-password prints the password
// alone: RESTIC_PASSWORD_COMMAND can run it); "new" adds "recovery phrase: <24 words>",
// "show" adds "id: <base58>" and "key: FILE".
func runIdentity(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, identityUsage)
		return usageErr("identity: want a subcommand: new, restore or show")
	}
	switch args[0] {
	case "new":
		return identityNew(env, args[1:])
	case "restore":
		return identityRestore(env, args[1:])
	case "show":
		return identityShow(env, args[1:])
	case "backup-password":
		return identityBackupPassword(env, args[1:])
	case "help", "-h", "--help":
		fmt.Fprintln(env.Stdout, identityUsage)
		return nil
	}
	fmt.Fprintln(env.Stderr, identityUsage)
	return usageErr("identity: unknown subcommand %q (want new, restore, show or backup-password)", args[0])
}

type identityFlags struct {
	key, passphraseFile string
}

// parseIdentityFlags parses the flags common to the subcommands. Positional
// arguments are refused: restore reads words from stdin only, because argv
// is visible to other users and lands in shell history.
func parseIdentityFlags(env Env, name string, args []string, withPassphrase bool) (identityFlags, error) {
	var f identityFlags
	fs := newFlagSet("identity "+name, env)
	fs.StringVar(&f.key, "key", "", "node key `file` (PKCS#8 PEM, mode 0600)")
	if withPassphrase {
		fs.StringVar(&f.passphraseFile, "passphrase-file", "", "read the optional BIP39 passphrase from `file` (one trailing newline is removed)")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return f, err
	}
	if len(pos) > 0 {
		if name == "restore" {
			return f, usageErr("identity restore: unexpected arguments: the recovery words are read from stdin, not from the command line")
		}
		return f, usageErr("identity %s: unexpected arguments %q", name, pos)
	}
	if f.key == "" {
		return f, usageErr("identity %s: --key FILE is required", name)
	}
	return f, nil
}

func identityNew(env Env, args []string) error {
	f, err := parseIdentityFlags(env, "new", args, true)
	if err != nil {
		return err
	}
	passphrase, err := readPassphraseFile(f.passphraseFile)
	if err != nil {
		return err
	}
	words, err := identity.NewMnemonic(rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKeyFromWords(env, f.key, words, passphrase); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "recovery phrase: "+words)
	fmt.Fprintln(env.Stderr, "Write the 24 words down and keep them offline. They are the only way to restore this\n"+
		"identity and its backups on a new device, and anyone who has them can act as this node.")
	return nil
}

// maxWordsInput bounds what restore reads from stdin; 24 words are < 250 bytes.
const maxWordsInput = 64 << 10

func identityRestore(env Env, args []string) error {
	f, err := parseIdentityFlags(env, "restore", args, true)
	if err != nil {
		return err
	}
	// Fail before the user types 24 words, not after.
	if _, err := os.Lstat(f.key); err == nil {
		return fmt.Errorf("%w: %s (refusing to overwrite it)", identity.ErrKeyExists, f.key)
	}
	passphrase, err := readPassphraseFile(f.passphraseFile)
	if err != nil {
		return err
	}
	words, err := readWords(env, "identity restore")
	if err != nil {
		return err
	}
	defer clear(words)
	return writeKeyFromWords(env, f.key, string(words), passphrase)
}

// readWords reads the recovery words from stdin (bounded).
func readWords(env Env, what string) ([]byte, error) {
	if env.Stdin == nil {
		return nil, fmt.Errorf("%s: no stdin to read the recovery words from", what)
	}
	if isTerminal(env.Stdin) {
		fmt.Fprintln(env.Stderr, "Type the 24 recovery words, then press Enter and Ctrl-D:")
	}
	input, err := io.ReadAll(io.LimitReader(env.Stdin, maxWordsInput+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read words from stdin: %w", what, err)
	}
	if len(input) > maxWordsInput {
		clear(input)
		return nil, fmt.Errorf("%s: more than %d bytes on stdin; want the 24 recovery words", what, maxWordsInput)
	}
	return input, nil
}

// identityBackupPassword prints the password of the identity's backups
// (restic repositories), for stock restic on any computer.
func identityBackupPassword(env Env, args []string) error {
	fs := newFlagSet("identity backup-password", env)
	passphraseFile := fs.String("passphrase-file", "", "read the optional BIP39 passphrase from `file` (one trailing newline is removed)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("identity backup-password: unexpected arguments: the recovery words are read from stdin, not from the command line")
	}
	passphrase, err := readPassphraseFile(*passphraseFile)
	if err != nil {
		return err
	}
	words, err := readWords(env, "identity backup-password")
	if err != nil {
		return err
	}
	defer clear(words)
	pw, err := identity.BackupPasswordFromMnemonic(string(words), passphrase)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, pw)
	return nil
}

// writeKeyFromWords derives the node key from the words, writes it to path
// and prints the DID on its own line.
func writeKeyFromWords(env Env, path, words, passphrase string) error {
	key, err := identity.NodeKeyFromMnemonic(words, passphrase)
	if err != nil {
		return err
	}
	if err := identity.WriteKeyFile(path, key); err != nil {
		return err
	}
	id, err := idOf(key)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, id.DID())
	return nil
}

func identityShow(env Env, args []string) error {
	f, err := parseIdentityFlags(env, "show", args, false)
	if err != nil {
		return err
	}
	key, err := identity.LoadKeyFile(f.key)
	if err != nil {
		return err
	}
	id, err := idOf(key)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, id.DID())
	fmt.Fprintln(env.Stdout, "id: "+id.String())
	fmt.Fprintln(env.Stdout, "key: "+f.key)
	return nil
}

func idOf(key ed25519.PrivateKey) (identity.ID, error) {
	return identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
}

// readPassphraseFile returns the file's contents minus one trailing newline
// ("\n" or "\r\n"), which editors and echo add; everything else, including
// other whitespace, is part of the passphrase. An empty path means no
// passphrase.
func readPassphraseFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("identity: read passphrase file: %w", err)
	}
	s := string(b)
	clear(b)
	if t, ok := strings.CutSuffix(s, "\n"); ok {
		s = strings.TrimSuffix(t, "\r")
	}
	return s, nil
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
