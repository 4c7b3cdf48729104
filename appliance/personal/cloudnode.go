package personal

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/cloud"
)

// cloudNode is the node as the personal cloud sees it (cloud.Node).
type cloudNode Node

func (c *cloudNode) node() *Node { return (*Node)(c) }

func (c *cloudNode) DID() string { return c.node().did() }

func (c *cloudNode) Key() ed25519.PrivateKey { return c.node().currentKey() }

// PendingWords are the words file's words when they are the current
// key's: an identity the device made on first boot, not yet confirmed.
func (c *cloudNode) PendingWords() string {
	n := c.node()
	key := n.currentKey()
	if key == nil {
		return ""
	}
	b, err := os.ReadFile(identity.WordsFile(n.cfg.KeyFile))
	if err != nil {
		return ""
	}
	words := strings.Join(strings.Fields(string(b)), " ")
	if k, err := identity.NodeKeyFromMnemonic(words, ""); err != nil || !k.Equal(key) {
		return ""
	}
	return words
}

// SetIdentity makes the key of words the node's. The same key as now
// confirms it (its words file goes); another one replaces it: the old
// key file (and words file) are kept beside it with a suffix, never
// deleted, then the network side restarts with the new key.
func (c *cloudNode) SetIdentity(words, passphrase string) (string, error) {
	n := c.node()
	key, err := identity.NodeKeyFromMnemonic(words, passphrase)
	if err != nil {
		return "", err
	}
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return "", err
	}
	path, wordsFile := n.cfg.KeyFile, identity.WordsFile(n.cfg.KeyFile)
	backupFile := identity.BackupPasswordFile(path)
	cur := n.currentKey()
	if cur != nil && cur.Equal(key) {
		// The words are confirmed (or typed again): keep the backup
		// password they give, and no longer the words.
		if err := identity.WriteBackupPassword(path, words, passphrase); err != nil {
			return "", err
		}
		if err := os.Remove(wordsFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("remove the words file: %w", err)
		}
		return id.DID(), nil
	}
	if err := os.MkdirAll(dirOf(path), 0o700); err != nil {
		return "", err
	}
	suffix := ".replaced-" + strconv.FormatInt(n.now().Unix(), 10)
	for _, p := range []string{path, wordsFile, backupFile} {
		if err := os.Rename(p, p+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("keep the old identity aside: %w", err)
		}
	}
	if err := identity.WriteBackupPassword(path, words, passphrase); err != nil {
		return "", err
	}
	if err := identity.WriteKeyFile(path, key); err != nil {
		return "", err
	}
	if err := n.setKey(key); err != nil {
		return "", err
	}
	n.update(func(s *Status) { s.NewKey = false })
	if cur != nil {
		n.log.Warn("identity replaced by the setup wizard; the old key is kept", "old_key", path+suffix, "did", id.DID())
	}
	select {
	case n.keyChanged <- struct{}{}:
	default:
	}
	return id.DID(), nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

func (c *cloudNode) Status() cloud.NodeStatus {
	st := c.node().Status()
	ns := cloud.NodeStatus{State: st.State, Detail: st.Detail, LastError: st.LastError, Mode: st.Mode,
		Supernodes: st.Supernodes, Peers: st.Peers, Started: st.Started}
	if st.TLS != nil {
		ns.TLS, ns.TLSWhy = st.TLS.Mode, st.TLS.Why
	}
	if st.Tunnel != nil && len(st.Tunnel.Supernodes) > 0 {
		ns.Supernodes = nil
		for _, l := range st.Tunnel.Supernodes {
			state := "spare"
			if l.Attached {
				state = "attached since " + l.Since.UTC().Format("2006-01-02 15:04 UTC")
			} else if l.LastError != "" {
				state = l.LastError
			}
			ns.Supernodes = append(ns.Supernodes, l.ID+": "+state)
		}
	}
	return ns
}
