package qemutests

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/pc2/pc2/appliance/device"
	"github.com/pc2/pc2/appliance/growperm"
	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestWholeDisk (issue 17): the image (64 MiB of perm) written onto a
// 4 GiB disk: on its first boot the device grows perm and its ext4 to the
// end of the disk, the status shows about 3.5 GiB free, the owner uploads
// a 1 GiB file; after a power cut the next boot finds nothing to grow and
// the file intact.
func TestWholeDisk(t *testing.T) {
	_, guestAddr := hostSupernode(t)
	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	img := qemutest.CopyImage(t, buildProfileImage(t, settings.Settings{Profile: profile.Personal, Supernodes: []string{guestAddr},
		AdminPasswordHash: hash}, nil))
	if err := os.Truncate(img, 4<<30); err != nil {
		t.Fatal(err)
	}
	vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	st := waitStatus(t, vm, 3*time.Minute, "perm grown", func(st personal.Status) bool {
		return st.Storage != nil && st.Storage.DiskTotal > 3<<30
	})
	if p := permStatus(t, vm); !p.Grown || p.Error != "" || p.DiskBytes != 4<<30 || p.FSBytes < 3<<30 {
		t.Errorf("the first boot's growth: %+v", p)
	}
	t.Logf("after the first boot: perm %.2f GiB, %.2f GiB free (QEMU start to here %v)",
		float64(st.Storage.DiskTotal)/(1<<30), float64(st.Storage.DiskFree)/(1<<30), time.Since(vm.Started).Round(100*time.Millisecond))
	if st.Storage.DiskFree < 3<<30+(1<<28) { // the rest: boot, two roots, ext4 metadata
		t.Errorf("%d bytes free on a 4 GiB disk, want about 3.5 GiB", st.Storage.DiskFree)
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	owner := cloudtest.New(t, base, &http.Client{Timeout: 10 * time.Minute})
	owner.CreateIdentity()
	owner.Password("owner password 1")
	owner.Step("skip", nil)
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{17}), 1<<30), h)
	start := time.Now()
	if r := owner.Upload("video.bin", src); r.Code != http.StatusCreated {
		t.Fatalf("1 GiB upload: %d %s", r.Code, r.Err())
	}
	t.Logf("1 GiB uploaded in %v", time.Since(start).Round(100*time.Millisecond))
	sum := h.Sum(nil)
	vm.Stop() // a power cut

	vm = qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
	st = waitStatus(t, vm, 3*time.Minute, "online again", func(st personal.Status) bool { return st.Storage != nil && st.Setup == "done" })
	if st.Storage.DiskTotal < 3<<30 || st.Storage.Used < 1<<30 {
		t.Fatalf("after the power cut: %+v", st.Storage)
	}
	if p := permStatus(t, vm); p.Grown || p.Error != "" || p.FSBytes < 3<<30 {
		t.Errorf("the second boot's growth: %+v, want nothing left to grow", p)
	}
	owner.Base = fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200))
	owner.Login("owner password 1")
	req, _ := http.NewRequest("GET", owner.Base+"/_/dl/video.bin", nil)
	resp, err := owner.C.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h2 := sha256.New()
	n, err := io.Copy(h2, resp.Body)
	if err != nil || n != 1<<30 || !bytes.Equal(h2.Sum(nil), sum) {
		t.Fatalf("the 1 GiB file after the power cut: %d bytes, %v, same content %v", n, err, bytes.Equal(h2.Sum(nil), sum))
	}
}

// permStatus is what growing perm found at this boot (the admin API).
func permStatus(t *testing.T, vm *qemutest.VM) device.PermStatus {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/device", vm.HostPort(4200)), nil)
	req.SetBasicAuth("admin", testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Perm *device.PermStatus `json:"perm"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || info.Perm == nil {
		t.Fatalf("admin API: %s, perm %+v, %v", resp.Status, info.Perm, err)
	}
	return *info.Perm
}

// TestWholeDiskInterrupted (issue 17): power cuts in the middle of the
// growth, made on the image before it boots: after the partition table
// was rewritten but before the kernel and the file system followed, and
// after only the backup GPT was written (a torn primary). The next boot
// completes the growth, and the node's key on perm is intact.
func TestWholeDiskInterrupted(t *testing.T) {
	_, guestAddr := hostSupernode(t)
	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	built := buildProfileImage(t, settings.Settings{Profile: profile.Personal, Supernodes: []string{guestAddr}, AdminPasswordHash: hash},
		map[string]image.PermFile{"pc2/node.key": {Data: keyPEM(t, vectorWords), Mode: 0o600}})
	for _, tc := range []struct {
		name string
		torn bool
	}{{"after the table", false}, {"torn primary GPT", true}} {
		t.Run(tc.name, func(t *testing.T) {
			img := qemutest.CopyImage(t, built)
			if err := os.Truncate(img, 2<<30); err != nil {
				t.Fatal(err)
			}
			// The first boot's table step, as the device would have done it.
			if r, err := growperm.Grow(growperm.Options{Disk: img, Partition: growperm.PermPartition}); err != nil || !r.Table {
				t.Fatalf("grow the table: %+v %v", r, err)
			}
			if tc.torn {
				f, err := os.OpenFile(img, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(bytes.Repeat([]byte{0xAA}, 8), 512+60) // the primary header's CRC no longer holds
				f.Close()
			}
			vm := qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true})
			st := waitOnline(t, vm, 3*time.Minute)
			if st.DID != vectorDID || st.Storage == nil || st.Storage.DiskTotal < 3<<29 {
				t.Fatalf("after the interrupted growth: DID %s, storage %+v", st.DID, st.Storage)
			}
			if p := permStatus(t, vm); !p.Grown || p.Error != "" || p.DiskBytes != 2<<30 {
				t.Errorf("the boot after the power cut: %+v, want the growth completed", p)
			}
			vm.Stop()
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if table, err := gpt.Read(f, 512, 512); err != nil || table.RecoveredFromBackup || table.Verify(f, 2<<30) != nil {
				t.Errorf("the GPT after the boot: %v, primary repaired: %v", err, err == nil && !table.RecoveredFromBackup)
			}
		})
	}
}
