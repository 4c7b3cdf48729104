package qemutests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/qemu-tests/qemutest"
	"github.com/pc2/pc2/services/backup"
)

// TestBackupRestoreAppliance (issue 17): the appliance's owner picks a
// restic REST server on the host as the backup location; the device
// backs up with the restic in its image and publishes the sealed location
// through the host's supernode. Then the disk is replaced by a fresh copy
// of the image: its wizard takes the 24 words, finds the backups through
// the DHT, restores, and the owner logs in to the same files.
func TestBackupRestoreAppliance(t *testing.T) {
	sn, guestAddr := hostSupernode(t)
	restic := restictest.StartRESTServer(t, 0)
	_, port, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(restic.URL, "http://"), "/"), ":")
	location := "http://10.0.2.2:" + port + "/alice/" // the host, from QEMU's user network
	pristine := buildProfileImage(t, settings.Settings{Profile: profile.Personal, Supernodes: []string{guestAddr}}, nil)

	vm := qemutest.Boot(t, qemutest.CopyImage(t, pristine), qemutest.Options{Forward: []int{4200}, Writable: true})
	waitStatus(t, vm, 3*time.Minute, "the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	owner := cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), &http.Client{Timeout: 5 * time.Minute})
	words := strings.Join(owner.CreateIdentity(), " ")
	owner.Password("owner password 1")
	owner.Step("skip", nil)
	rng := rand.New(rand.NewChaCha8([32]byte{17}))
	content := map[string][]byte{"notes.txt": []byte("notes of the appliance"), "public/index.html": []byte("<h1>home</h1>")}
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	content["video.bin"] = big
	for p, c := range content {
		if r := owner.Upload(p, bytes.NewReader(c)); r.Code != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", p, r.Code, r.Err())
		}
	}
	form := url.Values{"kind": {"rest"}, "url": {location}, "csrf": {owner.CSRF("/_/")}}
	if r := owner.Post("/_/backup/location", form); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("set the backup location: %d %s", r.Code, r.Location())
	}
	start := time.Now()
	var st backup.Status
	testenv.WaitFor(t, 5*time.Minute, "the appliance's first backup", func() bool {
		var v struct{ Status backup.Status }
		json.Unmarshal([]byte(owner.Get("/_/api/backup").Body), &v)
		st = v.Status
		return !st.LastSuccess.IsZero() || (st.LastError != "" && st.Running == "")
	})
	if st.LastError != "" || st.Last == nil || st.Last.TotalBytes < 8<<20 {
		t.Fatalf("the appliance's backup: %+v", st)
	}
	t.Logf("first backup of %d files (%.1f MB) in the VM (TCG): about %v", st.Last.TotalFiles, float64(st.Last.TotalBytes)/1e6, time.Since(start).Round(time.Second))

	// The host sees the backup record, sealed: no location in the clear,
	// and the words open it.
	key, _ := identity.NodeKeyFromMnemonic(words, "")
	id, _ := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	var sealed []byte
	testenv.WaitFor(t, time.Minute, "the backup record at the host's supernode", func() bool {
		rec, err := sn.ResolveBackup(context.Background(), id)
		if err == nil {
			sealed = rec.Sealed
		}
		return err == nil
	})
	if bytes.Contains(sealed, []byte("10.0.2.2")) {
		t.Error("the backup record shows the location in the clear")
	}
	pw, _ := identity.BackupPasswordFromMnemonic(words, "")
	if loc, err := backup.Open(sealed, pw); err != nil || loc.URL != location {
		t.Errorf("the record opens to %+v, %v; want %s", loc, err, location)
	}
	vm.Stop() // the device is lost

	// A new disk: a fresh copy of the image.
	vm = qemutest.Boot(t, pristine, qemutest.Options{Forward: []int{4200}})
	waitStatus(t, vm, 3*time.Minute, "the wizard", func(st personal.Status) bool { return st.Setup == "wizard" })
	owner = cloudtest.New(t, fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), &http.Client{Timeout: 5 * time.Minute})
	start = time.Now()
	owner.RestoreData(words, nil, 5*time.Minute)
	t.Logf("restored from the words in the VM in %v", time.Since(start).Round(time.Second))
	owner.Login("owner password 1")
	for p, c := range content {
		if r := owner.Get("/_/dl/" + p); !bytes.Equal([]byte(r.Body), c) {
			t.Errorf("%s after the restore: %d, %d bytes, want %d", p, r.Code, len(r.Body), len(c))
		}
	}
}
