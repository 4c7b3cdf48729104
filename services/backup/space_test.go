package backup_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
)

// as serves space to requests as if they came from node id (in the
// product, the peer connection proves it).
func as(t *testing.T, space *backup.Space, id identity.ID) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		space.ServeHTTP(w, r.WithContext(backup.WithPeer(r.Context(), id)))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func nodeID(t *testing.T, words string) identity.ID {
	key, err := identity.NodeKeyFromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	return id
}

// TestSpace: a friend backs up into the space the owner gave it, within
// its quota; the space holds ciphertext only; a stranger is refused, and
// so is a friend once removed.
func TestSpace(t *testing.T) {
	restic := restictest.Restic(t)
	dir := t.TempDir()
	space, err := backup.OpenSpace(dir, testlog.New(t, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	alice := nodeID(t, words)
	if err := space.SetFriend(alice.DID(), "alice.pc2.test", 3<<20); err == nil {
		t.Error("a 3 MB quota was taken")
	}
	if err := space.SetFriend("did:boson:nonsense", "", 1<<30); err == nil {
		t.Error("a bad DID was taken")
	}
	if err := space.SetFriend(alice.DID(), "", 1<<60); err == nil || !strings.Contains(err.Error(), "free on this disk") {
		t.Errorf("a quota larger than the disk: %v", err)
	}
	if err := space.SetFriend(alice.DID(), "alice.pc2.test", backup.MinFriendQuota); err != nil {
		t.Fatal(err)
	}
	loc := backup.Location{Kind: backup.KindREST, URL: as(t, space, alice)}
	a := newDevice(t, restic, &loc, words)
	fill(t, a.data, 20, 100<<10)
	if _, err := a.svc.BackupNow(ctx(t)); err != nil {
		t.Fatalf("backup into the friend's space: %v", err)
	}
	repo := filepath.Join(dir, alice.String())
	filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), "filea.bin") { // a file name: plaintext
				t.Errorf("%s holds plaintext", p)
			}
		}
		return nil
	})
	if fs := space.Friends(); len(fs) != 1 || fs[0].Used < 2_000_000 {
		t.Errorf("friends: %+v", fs)
	}
	// Over the quota: full, and the data already there stays.
	fill(t, a.data, 100, 1<<20)
	if _, err := a.svc.BackupNow(ctx(t)); !errors.Is(err, backup.ErrFull) {
		t.Errorf("backup over the quota: %v, want ErrFull", err)
	}
	if fs := space.Friends(); fs[0].Used > backup.MinFriendQuota+(1<<20) {
		t.Errorf("the friend uses %d bytes of a %d quota", fs[0].Used, backup.MinFriendQuota)
	}
	// The owner raises it: the next backup goes through.
	if err := space.SetFriend(alice.DID(), "alice.pc2.test", 1<<30); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.BackupNow(ctx(t)); err != nil {
		t.Errorf("backup after the quota was raised: %v", err)
	}

	// A stranger (another key) has no space here.
	other, _ := identity.NewMnemonic(rand.Reader)
	strangerLoc := backup.Location{Kind: backup.KindREST, URL: as(t, space, nodeID(t, other))}
	m := newDevice(t, restic, &strangerLoc, other)
	fill(t, m.data, 2, 1000)
	if _, err := m.svc.BackupNow(ctx(t)); err == nil {
		t.Error("a stranger backed up into the space")
	}
	// Reopened, the space remembers its friends.
	again, err := backup.OpenSpace(dir, nil, nil)
	if err != nil || !again.Allowed(alice) {
		t.Fatalf("reopened space: %v, alice allowed %v", err, again.Allowed(alice))
	}
	if err := space.RemoveFriend(alice.DID(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.BackupNow(ctx(t)); err == nil {
		t.Error("a removed friend backed up")
	}
	if _, err := os.Stat(repo); err != nil {
		t.Errorf("removing a friend without deleting lost the data: %v", err)
	}
}
