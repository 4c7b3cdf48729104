package personal

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/gwtest"
	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
)

// TestBackupRestoreFromWords: the owner picks a restic REST server on the
// dashboard and backs up; the node publishes the sealed location in its
// identity's backup record. The device is lost: a fresh one is given the
// 24 words in the wizard, finds the backups through the DHT alone,
// restores, and the owner logs in with the old password to the same files
// and share links. Then one file comes back from the dashboard into a
// folder of its own, beside the current ones.
func TestBackupRestoreFromWords(t *testing.T) {
	restic := restictest.Restic(t)
	srv := restictest.StartRESTServer(t, 0)
	gw := gwtest.Start(t, gwtest.Options{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startNode := func(name string) (*cloudtest.Browser, func()) {
		base, stop := runNode(t, ctx, &Config{KeyFile: filepath.Join(dir, name, "node.key"), Mode: ModeRelayed,
			Supernodes: gw.Addrs, Backup: BackupConfig{Restic: restic}})
		return cloudtest.New(t, base, nil), stop
	}
	status := func(b *cloudtest.Browser) backup.Status {
		t.Helper()
		r := b.Get("/_/api/backup")
		var v struct{ Status backup.Status }
		if err := json.Unmarshal([]byte(r.Body), &v); err != nil {
			t.Fatalf("backup API: %d %s", r.Code, r.Body)
		}
		return v.Status
	}
	form := func(b *cloudtest.Browser, path string, v url.Values) cloudtest.Response {
		t.Helper()
		v.Set("csrf", b.CSRF("/_/"))
		return b.Post(path, v)
	}

	one, stop := startNode("one")
	words := strings.Join(one.CreateIdentity(), " ")
	one.Password("owner password")
	one.Step("skip", nil)
	if r := form(one, "/_/mkdir", url.Values{"name": {"photos"}}); r.Code != http.StatusSeeOther {
		t.Fatalf("mkdir: %d %s", r.Code, r.Err())
	}
	content := map[string]string{"notes.txt": "my notes", "photos/cat.jpg": strings.Repeat("cat", 100000), "public/index.html": "<h1>hi</h1>"}
	for p, c := range content {
		if r := one.Upload(p, strings.NewReader(c)); r.Code != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", p, r.Code, r.Err())
		}
	}
	link := one.Share("notes.txt", 0)
	if st := status(one); !strings.Contains(st.Warning, "choose where") {
		t.Errorf("before a location is set, the warning is %q", st.Warning)
	}
	loc := url.Values{"kind": {"rest"}, "url": {srv.URL + "alice/"}}
	if r := form(one, "/_/backup/location", loc); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("set location: %d %s", r.Code, r.Location())
	}
	// The schedule starts the first backup at once.
	testenv.WaitFor(t, 2*time.Minute, "the first backup", func() bool { return !status(one).LastSuccess.IsZero() })
	if st := status(one); st.LastError != "" || st.Last == nil || st.Last.TotalFiles < 3 || st.Warning != "" {
		t.Fatalf("status after the first backup: %+v", st)
	}
	if r := one.Get("/_/backup"); !strings.Contains(r.Body, "REST server "+srv.URL+"alice/") || !strings.Contains(r.Body, `id="restore-snapshot"`) {
		t.Fatalf("backup page: %d", r.Code)
	}
	waitRecord(t, one)
	stop() // the device is lost

	two, stop2 := startNode("two")
	defer stop2()
	two.RestoreData(words, nil, 3*time.Minute)
	two.Login("owner password")
	for p, c := range content {
		if r := two.Get("/_/dl/" + p); r.Body != c {
			t.Errorf("%s after the restore: %d, %d bytes, want %d", p, r.Code, len(r.Body), len(c))
		}
	}
	if r := two.Get(link); r.Body != "my notes" {
		t.Errorf("share link after the restore: %d %q", r.Code, r.Body)
	}
	if st := status(two); st.Location != "REST server "+srv.URL+"alice/" {
		t.Errorf("the restored node backs up to %q", st.Location)
	}

	// One file of the first device's backup, beside the current one.
	if r := two.Upload("notes.txt", strings.NewReader("changed")); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	var snaps struct{ Snapshots []backup.Snapshot }
	json.Unmarshal([]byte(two.Get("/_/api/backup?snapshots=1").Body), &snaps)
	if len(snaps.Snapshots) == 0 {
		t.Fatal("no snapshots listed")
	}
	first := snaps.Snapshots[len(snaps.Snapshots)-1] // newest first
	if r := form(two, "/_/backup/restore", url.Values{"paths": {"notes.txt"}, "snapshot": {first.ID}}); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("restore a file: %d %s", r.Code, r.Location())
	}
	testenv.WaitFor(t, time.Minute, "the file restore", func() bool { return strings.Contains(two.Get("/_/backup").Body, `id="restore-done"`) })
	var restored []string
	var list []struct{ Name string }
	json.Unmarshal([]byte(two.Get("/_/api/files/").Body), &list)
	for _, e := range list {
		if strings.HasPrefix(e.Name, "Restored ") {
			restored = append(restored, e.Name)
		}
	}
	if len(restored) != 1 {
		t.Fatalf("restored folders: %v", restored)
	}
	if r := two.Get("/_/dl/" + url.PathEscape(restored[0]) + "/notes.txt"); r.Body != "my notes" {
		t.Errorf("restored notes.txt: %d %q", r.Code, r.Body)
	}
	if r := two.Get("/_/dl/notes.txt"); r.Body != "changed" {
		t.Errorf("the current notes.txt after a restore: %q", r.Body)
	}
}

// TestBackupWordsForProvisionedKey: a device provisioned with a key file
// has no backup password; the backup page asks for the words once,
// refuses words of another identity, and takes the right ones.
func TestBackupWordsForProvisionedKey(t *testing.T) {
	gw := gwtest.Start(t, gwtest.Options{})
	words, _ := identity.NewMnemonic(rand.Reader)
	key, _ := identity.NodeKeyFromMnemonic(words, "")
	keyFile := filepath.Join(t.TempDir(), "node.key")
	if err := identity.WriteKeyFile(keyFile, key); err != nil {
		t.Fatal(err)
	}
	base, stop := runNode(t, context.Background(), &Config{KeyFile: keyFile, Mode: ModeRelayed, Supernodes: gw.Addrs})
	defer stop()
	b := cloudtest.New(t, base, nil)
	b.Step("keep", nil)
	b.Password("owner password")
	b.Step("skip", nil)
	if r := b.Get("/_/backup"); !strings.Contains(r.Body, `id="backup-words"`) {
		t.Fatalf("the backup page does not ask for the words: %d", r.Code)
	}
	other, _ := identity.NewMnemonic(rand.Reader)
	post := func(w string) string {
		r := b.Post("/_/backup/words", url.Values{"words": {w}, "csrf": {b.CSRF("/_/")}})
		return r.Location()
	}
	if loc := post(other); !strings.Contains(loc, "err=") {
		t.Errorf("another identity's words were taken: %s", loc)
	}
	if _, err := os.Stat(identity.BackupPasswordFile(keyFile)); err == nil {
		t.Fatal("a backup password was written for the wrong words")
	}
	if loc := post(words); strings.Contains(loc, "err=") {
		t.Fatalf("the right words were refused: %s", loc)
	}
	want, _ := identity.BackupPasswordFromMnemonic(words, "")
	if got, err := os.ReadFile(identity.BackupPasswordFile(keyFile)); err != nil || strings.TrimSpace(string(got)) != want {
		t.Fatalf("backup password file: %q %v", got, err)
	}
	if r := b.Get("/_/backup"); strings.Contains(r.Body, `id="backup-words"`) {
		t.Error("the words are still asked for")
	}
}

// TestBackupToFriend: bob gives alice backup space on his dashboard;
// alice, like bob behind a relay, picks bob's node as her location and
// backs up through the relays, authenticated end to end by their keys;
// bob's node holds only ciphertext. Mallory, whom bob did not allow, is
// refused. Alice's words alone then restore her cloud on a fresh device
// from bob's node.
func TestBackupToFriend(t *testing.T) {
	restic := restictest.Restic(t)
	gw := gwtest.Start(t, gwtest.Options{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(name string) (*cloudtest.Browser, *Config, func()) {
		cfg := &Config{KeyFile: filepath.Join(dir, name, "node.key"), Mode: ModeRelayed, Supernodes: gw.Addrs,
			Backup: BackupConfig{Restic: restic}}
		base, stop := runNode(t, ctx, cfg)
		return cloudtest.New(t, base, nil), cfg, stop
	}
	setUp := func(b *cloudtest.Browser) (words string, did string) {
		words = strings.Join(b.CreateIdentity(), " ")
		b.Password("owner password")
		b.Step("skip", nil)
		var st struct{ DID string }
		json.Unmarshal([]byte(b.Get("/api/status").Body), &st)
		return words, st.DID
	}
	form := func(b *cloudtest.Browser, path string, v url.Values) string {
		t.Helper()
		v.Set("csrf", b.CSRF("/_/"))
		r := b.Post(path, v)
		if r.Code != http.StatusSeeOther {
			t.Fatalf("%s: %d %s", path, r.Code, r.Err())
		}
		return r.Location()
	}
	status := func(b *cloudtest.Browser) backup.Status {
		var v struct{ Status backup.Status }
		json.Unmarshal([]byte(b.Get("/_/api/backup").Body), &v)
		return v.Status
	}

	bob, bobCfg, stopBob := start("bob")
	defer stopBob()
	_, bobDID := setUp(bob)
	alice, _, stopAlice := start("alice")
	aliceWords, aliceDID := setUp(alice)
	mallory, _, stopMallory := start("mallory")
	defer stopMallory()
	setUp(mallory)

	if loc := form(bob, "/_/backup/friend", url.Values{"who": {aliceDID}, "quota_gb": {"1"}}); strings.Contains(loc, "err=") {
		t.Fatalf("bob gives alice space: %s", loc)
	}
	if r := bob.Get("/_/backup"); !strings.Contains(r.Body, aliceDID) {
		t.Fatal("bob's backup page does not list alice")
	}
	for p, c := range map[string]string{"notes.txt": "alice's notes", "public/index.html": "<h1>alice</h1>"} {
		if r := alice.Upload(p, strings.NewReader(c)); r.Code != http.StatusCreated {
			t.Fatal(r.Code)
		}
	}
	// The nodes publish their did records (with their relays) when they
	// get an identity: wait until alice's choice of bob's node works.
	var loc string
	testenv.WaitFor(t, time.Minute, "alice picks bob's node", func() bool {
		loc = form(alice, "/_/backup/location", url.Values{"kind": {"node"}, "node": {bobDID}})
		return !strings.Contains(loc, "err=")
	})
	testenv.WaitFor(t, 2*time.Minute, "alice's backup at bob's", func() bool {
		st := status(alice)
		return !st.LastSuccess.IsZero() || st.LastError != ""
	})
	if st := status(alice); st.LastError != "" || st.Location != "friend node "+bobDID {
		t.Fatalf("alice's backup to bob: %+v", st)
	}
	// Bob holds alice's repository, ciphertext only.
	aliceID, _ := identity.ParseDID(aliceDID)
	repo := filepath.Join(bobCfg.CloudDir(), spaceDir, aliceID.String())
	found := 0
	filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			found++
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "alice's notes") {
				t.Errorf("bob's %s holds alice's plaintext", p)
			}
		}
		return nil
	})
	if found < 4 {
		t.Fatalf("bob's space holds %d files of alice's", found)
	}

	// Mallory may not use bob's space.
	if loc := form(mallory, "/_/backup/location", url.Values{"kind": {"node"}, "node": {bobDID}}); !strings.Contains(loc, "err=") {
		t.Errorf("mallory picked bob's node: %s", loc)
	}

	// Alice's device is lost; her words find her backups at bob's.
	waitRecord(t, alice)
	stopAlice()
	fresh, _, stopFresh := start("alice2")
	defer stopFresh()
	fresh.RestoreData(aliceWords, nil, 3*time.Minute)
	fresh.Login("owner password")
	if r := fresh.Get("/_/dl/notes.txt"); r.Body != "alice's notes" {
		t.Errorf("notes after the restore from bob's node: %d %q", r.Code, r.Body)
	}
}

// waitRecord waits until the node has published its backup record (as
// the owner's status shows).
func waitRecord(t *testing.T, b *cloudtest.Browser) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, "the backup record published", func() bool {
		var st Status
		return json.Unmarshal([]byte(b.Get("/api/status").Body), &st) == nil && !st.BackupRecord.IsZero()
	})
}
