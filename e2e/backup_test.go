package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/supernode"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/nattest"
	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
)

// TestBackupToFriendNAT (issue 17): alice behind a home NAT backs up to
// bob's node behind carrier-grade NAT, through their supernode's relay,
// each node a process in its own network namespace. Bob's node holds
// only ciphertext; mallory's key is refused; bob's quota stops alice,
// and once bob raises it her next backup goes through.
func TestBackupToFriendNAT(t *testing.T) {
	restic := restictest.Restic(t)
	tp := nattest.New(t)
	dir := t.TempDir()
	snKey, _, snPeer := keyFile(t, dir, "sn.key")
	snAddr := fmt.Sprintf("/ip4/%s/tcp/8090/p2p/%s", tp.SupernodeA.Addr(), snPeer)
	start(t, tp.SupernodeA, "supernode", "supernode", &supernode.Config{KeyFile: snKey, DataDir: filepath.Join(dir, "sn"),
		Listen: []string{"/ip4/0.0.0.0/tcp/8090"}, AllowPrivateDials: true})
	type node struct {
		did string
		cfg *personal.Config
		web *cloudtest.Browser
	}
	run := func(h *nattest.Host, name string) node {
		key, id := wordsKey(t, dir, name+".key")
		cfg := &personal.Config{KeyFile: key, Supernodes: []string{snAddr}, Mode: personal.ModeRelayed,
			DataDir: filepath.Join(dir, name), Backup: personal.BackupConfig{Restic: restic}}
		start(t, h, "node", name, cfg)
		// The owner's browser on the node's own network.
		c := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return h.Dial(ctx, "tcp", "127.0.0.1:4200")
		}}}
		web := cloudtest.New(t, "http://node", c)
		web.Step("keep", nil)
		web.Password("owner password")
		web.Step("skip", nil)
		return node{id.DID(), cfg, web}
	}
	alice, bob, mallory := run(tp.Node1, "alice"), run(tp.Node2, "bob"), run(tp.Direct, "mallory")
	form := func(n node, path string, v url.Values) string {
		t.Helper()
		v.Set("csrf", n.web.CSRF("/_/"))
		r := n.web.Post(path, v)
		if r.Code != http.StatusSeeOther {
			t.Fatalf("%s: %d %s", path, r.Code, r.Err())
		}
		return r.Location()
	}
	status := func(n node) backup.Status {
		var v struct{ Status backup.Status }
		json.Unmarshal([]byte(n.web.Get("/_/api/backup").Body), &v)
		return v.Status
	}

	if loc := form(bob, "/_/backup/friend", url.Values{"who": {alice.did}, "quota_gb": {"0.07"}}); strings.Contains(loc, "err=") {
		t.Fatalf("bob gives alice 70 MB: %s", loc)
	}
	marker := "alice's diary, not for bob"
	if r := alice.web.Upload("diary.txt", strings.NewReader(marker)); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	if r := alice.web.Upload("small.bin", io.LimitReader(rand.Reader, 20<<20)); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	var loc string
	testenv.WaitFor(t, 2*time.Minute, "alice picks bob's node", func() bool {
		loc = form(alice, "/_/backup/location", url.Values{"kind": {"node"}, "node": {bob.did}})
		return !strings.Contains(loc, "err=")
	})
	waitBackup := func(what string) backup.Status {
		t.Helper()
		var st backup.Status
		testenv.WaitFor(t, 5*time.Minute, what, func() bool {
			st = status(alice)
			return st.Running == "" && !st.LastAttempt.IsZero()
		})
		return st
	}
	if st := waitBackup("alice's first backup at bob's"); st.LastError != "" || st.Last == nil || st.Last.TotalBytes < 20<<20 {
		t.Fatalf("alice's backup through the relay to bob: %+v", st)
	}
	// Bob's node holds alice's repository, and no word of it in the clear.
	aliceKeyID := strings.TrimPrefix(alice.did, "did:boson:")
	repo := filepath.Join(bob.cfg.DataDir, "backup-space", aliceKeyID)
	files := 0
	filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
			if b, _ := os.ReadFile(p); strings.Contains(string(b), marker) || strings.Contains(string(b), "diary.txt") {
				t.Errorf("bob's %s holds alice's plaintext", p)
			}
		}
		return nil
	})
	if files < 4 {
		t.Fatalf("bob's space holds %d files of alice's repository", files)
	}
	// Mallory's key is refused.
	if loc := form(mallory, "/_/backup/location", url.Values{"kind": {"node"}, "node": {bob.did}}); !strings.Contains(loc, "err=") {
		t.Errorf("mallory picked bob's node: %s", loc)
	}
	// Over bob's quota: the backup fails as full, and says so.
	if r := alice.web.Upload("big.bin", io.LimitReader(rand.Reader, 100<<20)); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	first := status(alice).LastAttempt
	form(alice, "/_/backup/now", url.Values{})
	testenv.WaitFor(t, 5*time.Minute, "alice's backup over the quota", func() bool {
		st := status(alice)
		return st.Running == "" && st.LastAttempt.After(first)
	})
	if st := status(alice); !strings.Contains(st.LastError, "full") {
		t.Fatalf("a backup over bob's quota: %+v", st)
	}
	// Bob gives more: the next backup goes through.
	form(bob, "/_/backup/friend", url.Values{"who": {alice.did}, "quota_gb": {"1"}})
	second := status(alice).LastAttempt
	form(alice, "/_/backup/now", url.Values{})
	testenv.WaitFor(t, 5*time.Minute, "alice's backup with room", func() bool {
		st := status(alice)
		return st.Running == "" && st.LastAttempt.After(second)
	})
	if st := status(alice); st.LastError != "" || st.Last.TotalBytes < 120<<20 {
		t.Fatalf("alice's backup after bob raised the quota: %+v", st)
	}
}

// wordsKey writes the key of fresh words, and their backup password,
// to dir/name.
func wordsKey(t *testing.T, dir, name string) (string, identity.ID) {
	t.Helper()
	words, err := identity.NewMnemonic(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.NodeKeyFromMnemonic(words, "")
	path := filepath.Join(dir, name)
	if err := identity.WriteBackupPassword(path, words, ""); err != nil {
		t.Fatal(err)
	}
	if err := identity.WriteKeyFile(path, key); err != nil {
		t.Fatal(err)
	}
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	return path, id
}
