//go:build linux

package flash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSys is a /proc and /sys tree laid out like the kernel's: disks under
// sys/devices/virtual/block, partitions inside their disk's directory,
// sys/class/block symlinks to both.
type fakeSys struct {
	t     testing.TB
	root  string
	nodes map[string]node // /dev path -> what stat says
}

func newFakeSys(t testing.TB) *fakeSys {
	t.Helper()
	f := &fakeSys{t: t, root: t.TempDir(), nodes: map[string]node{}}
	for _, d := range []string{"proc/self", "sys/class/block", "sys/devices/virtual/block"} {
		if err := os.MkdirAll(filepath.Join(f.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.mountinfo("22 27 0:21 / /proc rw,relatime - proc proc rw")
	return f
}

func (f *fakeSys) write(rel, content string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) dev(name string, major, minor uint32, sectors int64, dir string) {
	f.t.Helper()
	f.write(dir+"/dev", fmt.Sprintf("%d:%d", major, minor))
	f.write(dir+"/size", fmt.Sprint(sectors))
	rel, err := filepath.Rel(filepath.Join(f.root, "sys/class/block"), filepath.Join(f.root, dir))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(f.root, "sys/class/block", name)); err != nil {
		f.t.Fatal(err)
	}
	f.nodes["/dev/"+name] = node{kind: BlockDevice, rdev: unix.Mkdev(major, minor)}
}

func (f *fakeSys) disk(name string, major, minor uint32, sectors int64, vendor, model string) {
	dir := "sys/devices/virtual/block/" + name
	f.dev(name, major, minor, sectors, dir)
	f.write(dir+"/removable", "1")
	if vendor != "" {
		f.write(dir+"/device/vendor", vendor+"  ")
	}
	if model != "" {
		f.write(dir+"/device/model", model+"  ")
	}
}

func (f *fakeSys) part(disk, name string, major, minor uint32, sectors int64) {
	dir := "sys/devices/virtual/block/" + disk + "/" + name
	f.dev(name, major, minor, sectors, dir)
	f.write(dir+"/partition", "1")
}

// holder stacks upper (dm-0, md0) on lower.
func (f *fakeSys) holder(lower, upper string) {
	f.t.Helper()
	for _, l := range []struct{ dir, name string }{
		{"sys/class/block/" + lower + "/holders", upper},
		{"sys/class/block/" + upper + "/slaves", lower},
	} {
		p := filepath.Join(f.root, l.dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Symlink("../../"+l.name, filepath.Join(p, l.name)); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fakeSys) mountinfo(lines ...string) {
	f.write("proc/self/mountinfo", strings.Join(lines, "\n"))
}

func (f *fakeSys) system() system {
	return system{root: f.root, lookup: f.lookup}
}

func (f *fakeSys) lookup(path string) (node, error) {
	if n, ok := f.nodes[path]; ok {
		return n, nil
	}
	return statNode(path)
}

// standard is a laptop: root on sda2, and an SD card sdb with two
// partitions.
func standard(t testing.TB) *fakeSys {
	f := newFakeSys(t)
	f.disk("sda", 8, 0, 500<<21, "ATA", "Samsung SSD")
	f.part("sda", "sda1", 8, 1, 1<<20)
	f.part("sda", "sda2", 8, 2, 499<<21)
	f.disk("sdb", 8, 16, 30<<21, "Generic", "STORAGE DEVICE")
	f.part("sdb", "sdb1", 8, 17, 512<<11)
	f.part("sdb", "sdb2", 8, 18, 29<<21)
	f.mountinfo(
		"22 27 0:21 / /proc rw,relatime - proc proc rw",
		"27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw",
		"28 27 8:1 / /boot/efi rw,relatime - vfat /dev/sda1 rw",
	)
	return f
}

// image makes a regular file of size bytes to flash.
func sizedImage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pc2.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDescribe(t *testing.T) {
	f := standard(t)
	s := f.system()
	s.fsInfo = func(devs []string) map[string][2]string {
		return map[string][2]string{"/dev/sdb1": {"vfat", "bootfs"}, "/dev/sdb2": {"ext4", "rootfs"}}
	}
	got, err := s.describe("/dev/sdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", got)
	if got.Name != "sdb" || got.Dev != "8:16" || got.Size != 30<<30 || got.Vendor != "Generic" || got.Model != "STORAGE DEVICE" || !got.Removable {
		t.Errorf("got %+v, want sdb 8:16, 30 GiB, Generic STORAGE DEVICE, removable", got)
	}
	want := []Partition{{"sdb1", 512 << 20, "vfat", "bootfs"}, {"sdb2", 29 << 30, "ext4", "rootfs"}}
	if fmt.Sprint(got.Partitions) != fmt.Sprint(want) {
		t.Errorf("partitions got %v, want %v", got.Partitions, want)
	}
	if len(got.InUse) != 0 || got.RootDisk != "" {
		t.Errorf("got in use %q, root %q; want neither", got.InUse, got.RootDisk)
	}
	for _, w := range []string{"/dev/sdb: 30.0 GiB, Generic STORAGE DEVICE (removable)", "sdb2", "29.0 GiB", `ext4  "rootfs"`} {
		if !strings.Contains(got.String(), w) {
			t.Errorf("summary %q does not contain %q", got, w)
		}
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(f *fakeSys)
		device string
		size   int64 // of the image; default 1 GiB
		want   error
		msg    string
	}{{
		name:   "mounted partition",
		setup:  func(f *fakeSys) { f.mountinfo("29 27 8:18 / /media/my\\040card rw - ext4 /dev/sdb2 rw") },
		device: "/dev/sdb",
		want:   ErrInUse,
		msg:    "/dev/sdb2 is mounted on /media/my card",
	}, {
		name:   "mounted whole disk",
		setup:  func(f *fakeSys) { f.mountinfo("29 27 8:16 / /mnt rw - vfat /dev/sdb rw") },
		device: "/dev/sdb",
		want:   ErrInUse,
		msg:    "/dev/sdb is mounted on /mnt",
	}, {
		name:   "btrfs anonymous device, matched by source",
		setup:  func(f *fakeSys) { f.mountinfo("29 27 0:45 / /data rw - btrfs /dev/sdb1 rw") },
		device: "/dev/sdb",
		want:   ErrInUse,
		msg:    "/dev/sdb1 is mounted on /data",
	}, {
		name: "mounted through device-mapper",
		setup: func(f *fakeSys) {
			f.disk("dm-0", 253, 0, 29<<21, "", "")
			f.holder("sdb2", "dm-0")
			f.mountinfo("29 27 253:0 / /secret rw - ext4 /dev/mapper/crypt rw")
		},
		device: "/dev/sdb",
		want:   ErrInUse,
		msg:    "/dev/dm-0 is mounted on /secret",
	}, {
		name: "swap",
		setup: func(f *fakeSys) {
			f.write("proc/swaps", "Filename Type Size Used Priority\n/dev/sdb2 partition 1000 0 -2")
		},
		device: "/dev/sdb",
		want:   ErrInUse,
		msg:    "/dev/sdb2 is in use as swap",
	}, {
		name:   "root disk",
		device: "/dev/sda",
		want:   ErrRootDisk,
		msg:    "/ is /dev/sda2 (8:2)",
	}, {
		name: "root disk under LVM",
		setup: func(f *fakeSys) {
			f.disk("nvme0n1", 259, 0, 1<<30, "", "")
			f.part("nvme0n1", "nvme0n1p3", 259, 3, 1<<29)
			f.disk("dm-1", 253, 1, 1<<29, "", "")
			f.holder("nvme0n1p3", "dm-1")
			f.mountinfo("27 1 253:1 / / rw - ext4 /dev/mapper/vg-root rw")
		},
		device: "/dev/nvme0n1",
		want:   ErrRootDisk,
		msg:    "/ is /dev/dm-1",
	}, {
		name:   "partition",
		device: "/dev/sdb1",
		want:   ErrPartition,
		msg:    "write the whole disk, /dev/sdb",
	}, {
		name:   "too small",
		setup:  func(f *fakeSys) { f.disk("mmcblk0", 179, 0, 1<<20, "", "") },
		device: "/dev/mmcblk0",
		size:   1 << 30,
		want:   ErrTooSmall,
		msg:    "512.0 MiB, image 1.0 GiB",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := standard(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			size := tc.size
			if size == 0 {
				size = 1 << 30
			}
			img := sizedImage(t, size)
			opts := Options{Image: img, Device: tc.device, Root: f.root, lookup: f.lookup}
			_, err := Flash(context.Background(), opts)
			t.Logf("Flash: %v", err)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) || !strings.Contains(fmt.Sprint(err), tc.device) {
				t.Fatalf("got %v, want %v naming %s and %q", err, tc.want, tc.device, tc.msg)
			}
			// Preflight says the same without writing, and shows the target.
			tg, err := Preflight(opts)
			if !errors.Is(err, tc.want) || tg == nil {
				t.Errorf("Preflight got %v, %v; want a target and %v", tg, err, tc.want)
			}
			// Force passes the checks (and then fails to open the fake
			// device, which does not exist here).
			opts.Force = true
			if _, err := Preflight(opts); err != nil {
				t.Errorf("Preflight with Force got %v, want nil", err)
			}
		})
	}
}

func TestDescribeUnknownDevice(t *testing.T) {
	f := newFakeSys(t)
	f.nodes["/dev/sdz"] = node{kind: BlockDevice, rdev: unix.Mkdev(65, 0)}
	_, err := f.system().describe("/dev/sdz")
	if err == nil || !strings.Contains(err.Error(), "65:0") {
		t.Errorf("got %v, want an error naming 65:0", err)
	}
}

func TestParseMountinfo(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"37 35 8:17 / /media/a\\134b\\040c rw - vfat /dev/sdb1 rw\n" +
		"garbage\n" +
		"38 35 8:18 / /x rw shared:2 master:3 - ext4 /dev/sdb2 rw\n"
	got := parseMountinfo([]byte(in))
	want := []mount{{"98:0", "/mnt2", "/dev/root"}, {"8:17", `/media/a\b c`, "/dev/sdb1"}, {"8:18", "/x", "/dev/sdb2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"))
	f.Add([]byte("37 35 8:17 / /media/a\\134b\\040c rw - vfat /dev/sdb1 rw\n- - - - - - -\n"))
	f.Add([]byte("1 2 3 4 5 6 - 7\n\\\\\\0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range parseMountinfo(b) {
			if m.dev == "" || m.point == "" || m.source == "" {
				t.Errorf("empty field in %+v", m)
			}
		}
	})
}
