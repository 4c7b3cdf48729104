package rootdisk

import (
	"os"
	"path/filepath"
	"testing"
)

// sysfs builds a sysfs-like tree with disk holding partition part (whose
// partition file says num) as device 179:<part>, and the disk as 179:0.
func sysfs(t testing.TB, disk, part, num string) string {
	t.Helper()
	sys := t.TempDir()
	dir := filepath.Join(sys, "devices", "pci0", "block", disk, part)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "partition"), []byte(num+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	devBlock := filepath.Join(sys, "dev", "block")
	if err := os.MkdirAll(devBlock, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(devBlock, "179:2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(dir), filepath.Join(devBlock, "179:0")); err != nil {
		t.Fatal(err)
	}
	return devBlock
}

// TestFind finds the disk above a partition in a sysfs-like tree.
func TestFind(t *testing.T) {
	devBlock := sysfs(t, "mmcblk0", "mmcblk0p2", "2")
	got, err := find(devBlock, "/dev", 179, 2)
	if err != nil || got.Path != "/dev/mmcblk0" || got.Root != 2 {
		t.Fatalf("got %+v, %v; want /dev/mmcblk0, root on 2", got, err)
	}
	if _, err := find(devBlock, "/dev", 179, 0); err == nil {
		t.Fatal("whole disk as root: no error")
	}
	if _, err := find(devBlock, "/dev", 8, 1); err == nil {
		t.Fatal("unknown device: no error")
	}
	if _, err := find(sysfs(t, "vda", "vda2", "two"), "/dev", 179, 2); err == nil {
		t.Fatal("partition file without a number: no error")
	}
}

// TestPartition names partitions the way the kernel does.
func TestPartition(t *testing.T) {
	for _, tc := range []struct{ disk, want string }{
		{"/dev/vda", "/dev/vda3"},
		{"/dev/sda", "/dev/sda3"},
		{"/dev/mmcblk0", "/dev/mmcblk0p3"},
		{"/dev/nvme0n1", "/dev/nvme0n1p3"},
	} {
		if got := (&Disk{Path: tc.disk, Root: 2}).Partition(3); got != tc.want {
			t.Errorf("%s: Partition(3) = %q, want %q", tc.disk, got, tc.want)
		}
	}
}
