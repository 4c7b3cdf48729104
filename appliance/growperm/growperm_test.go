package growperm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/testing/testenv"
)

const mib = 1 << 20

// layout: boot 1-9 MiB, root A 9-17, root B 17-25, perm 25 MiB to the
// end of a 64 MiB image, as package image lays a disk out.
var starts = [4]int64{1 * mib, 9 * mib, 17 * mib, 25 * mib}

func gptImage(t *testing.T, imageBytes, diskBytes int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(imageBytes); err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for i := range 4 {
		end := imageBytes - mib
		if i < 3 {
			end = starts[i+1]
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: uint64(starts[i] / 512),
			End: uint64(end/512 - 1), Size: uint64(end - starts[i]), Type: gpt.LinuxFilesystem, Name: fmt.Sprint("p", i+1)})
	}
	if err := table.Write(f, imageBytes); err != nil {
		t.Fatal(err)
	}
	// The image is written onto a bigger disk.
	if err := f.Truncate(diskBytes); err != nil {
		t.Fatal(err)
	}
	return path
}

func readGPT(t *testing.T, path string) *gpt.Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// TestGrowGPT: an image's GPT on a 4x bigger disk: perm grows to the
// last 1 MiB boundary before the backup GPT, which moves to the disk's
// end; the other partitions stay; a second run changes nothing. A power
// cut after the backup was written and before the primary (a primary
// that no longer verifies) is completed by the next run.
func TestGrowGPT(t *testing.T) {
	path := gptImage(t, 64*mib, 256*mib)
	r, err := Grow(Options{Disk: path, Partition: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Table || r.DiskBytes != 256*mib || r.PartitionBytes != 255*mib-starts[3] {
		t.Fatalf("grow: %+v, want the table grown to %d bytes", r, 255*mib-starts[3])
	}
	table := readGPT(t, path)
	if p := table.Partitions[3]; p.Start != uint64(starts[3]/512) || p.End != 255*mib/512-1 {
		t.Fatalf("perm spans sectors %d-%d", p.Start, p.End)
	}
	for i := range 3 {
		if p := table.Partitions[i]; p.Start != uint64(starts[i]/512) || p.End != uint64(starts[i+1]/512-1) {
			t.Fatalf("partition %d moved: %d-%d", i+1, p.Start, p.End)
		}
	}
	if err := table.Verify(mustOpen(t, path), 256*mib); err != nil {
		t.Fatalf("the backup GPT is not at the disk's end: %v", err)
	}
	if r, err := Grow(Options{Disk: path, Partition: 4}); err != nil || r.Table {
		t.Fatalf("second run: %+v %v, want nothing to do", r, err)
	}

	// The image again, and a power cut after the backup was written: the
	// primary header is torn (its CRC fails), the backup is the grown one.
	path = gptImage(t, 64*mib, 256*mib)
	if _, err := Grow(Options{Disk: path, Partition: 4}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xAA}, 8), 512+60) // the primary header's disk GUID: its CRC fails
	f.Close()
	if tb := readGPT(t, path); !tb.RecoveredFromBackup {
		t.Fatal("a torn primary did not make the table come from the backup")
	}
	if r, err := Grow(Options{Disk: path, Partition: 4}); err != nil || !r.Table || r.PartitionBytes != 255*mib-starts[3] {
		t.Fatalf("after the power cut: %+v %v, want the primary rewritten", r, err)
	}
	if tb := readGPT(t, path); tb.RecoveredFromBackup || tb.Partitions[3].End != 255*mib/512-1 {
		t.Fatalf("primary not repaired: recovered %v, end %d", tb.RecoveredFromBackup, tb.Partitions[3].End)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestGrowMBR: the Raspberry Pi's MBR: perm grows to the disk's last
// 1 MiB boundary in one sector write; a second run changes nothing.
func TestGrowMBR(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	table := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512}
	for i := range 4 {
		end := int64(64*mib - mib)
		if i < 3 {
			end = starts[i+1]
		}
		table.Partitions = append(table.Partitions, &mbr.Partition{Type: mbr.Linux, Start: uint32(starts[i] / 512), Size: uint32((end - starts[i]) / 512)})
	}
	if err := f.Truncate(64 * mib); err != nil {
		t.Fatal(err)
	}
	if err := table.Write(f, 64*mib); err != nil {
		t.Fatal(err)
	}
	f.Truncate(300*mib + 4096) // not a whole number of MiB
	f.Close()
	r, err := Grow(Options{Disk: path, Partition: 4})
	if err != nil || !r.Table || r.PartitionBytes != 300*mib-starts[3] {
		t.Fatalf("grow: %+v %v, want %d bytes", r, err, 300*mib-starts[3])
	}
	got, err := mbr.Read(mustOpen(t, path), 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Partitions[3]; int64(p.Start)*512 != starts[3] || int64(p.Size)*512 != 300*mib-starts[3] {
		t.Fatalf("perm: start %d size %d", p.Start, p.Size)
	}
	if r, err := Grow(Options{Disk: path, Partition: 4}); err != nil || r.Table {
		t.Fatalf("second run: %+v %v", r, err)
	}
}

// TestGrowRefusals: perm must be the last partition, and the disk must
// have a partition table.
func TestGrowRefusals(t *testing.T) {
	path := gptImage(t, 64*mib, 128*mib)
	if _, err := Grow(Options{Disk: path, Partition: 2}); err == nil || !strings.Contains(err.Error(), "not the last") {
		t.Errorf("growing partition 2: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.img")
	os.WriteFile(empty, make([]byte, 4*mib), 0o600)
	if _, err := Grow(Options{Disk: empty, Partition: 4}); err == nil {
		t.Error("a disk without a partition table was grown")
	}
}

// TestGrowMounted is the device's path on a loop device: the image's
// GPT with an ext4 perm holding a file, on a bigger disk, the file
// system mounted; Grow grows the table, the kernel's partition and the
// mounted file system, and the file is intact.
func TestGrowMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "growperm: the mounted test needs root (loop devices, mount)")
	}
	for _, p := range []string{"losetup", "partx", "mkfs.ext4"} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.SkipOrFail(t, "growperm: needs %s", p)
		}
	}
	path := gptImage(t, 64*mib, 64*mib)
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", fmt.Sprintf("offset=%d", starts[3]), path, fmt.Sprint((63*mib-starts[3])/4096)).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if err := os.Truncate(path, 1024*mib); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("losetup", "--find", "--show", path).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	// The partitions, as the kernel finds them at boot (some kernels do
	// not scan loop devices themselves; and some keep a detached loop
	// device's partitions: they are dropped first and last).
	exec.Command("partx", "--delete", loop).Run()
	t.Cleanup(func() {
		exec.Command("partx", "--delete", loop).Run()
		exec.Command("losetup", "-d", loop).Run()
	})
	if out, err := exec.Command("partx", "--add", loop).CombinedOutput(); err != nil {
		t.Fatalf("partx: %v %s", err, out)
	}
	part := loop + "p4"
	testenv.WaitFor(t, 10*1e9, "the loop device's partitions", func() bool { _, err := os.Stat(part); return err == nil })
	mnt := t.TempDir()
	if err := unix.Mount(part, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", part, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	data := bytes.Repeat([]byte("keep me "), 1<<16)
	if err := os.WriteFile(filepath.Join(mnt, "file"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	var before unix.Statfs_t
	unix.Statfs(mnt, &before)

	if !hasCapSysResource(t) {
		// Containers often drop it; the QEMU image tests grow a mounted
		// perm in a VM with every capability.
		r, err := Grow(Options{Disk: loop, Partition: 4, PartitionDevice: part})
		if err != nil || !r.Table || !r.Kernel || r.PartitionBytes != 1023*mib-starts[3] {
			t.Fatalf("grow the table and the kernel's partition: %+v %v", r, err)
		}
		if size, err := kernelSize(part); err != nil || size != r.PartitionBytes {
			t.Fatalf("the kernel sees %d bytes (%v), want %d", size, err, r.PartitionBytes)
		}
		t.Skip("growperm: growing a mounted ext4 needs CAP_SYS_RESOURCE, which this process lacks; the table and the kernel's partition were grown")
	}
	r, err := Grow(Options{Disk: loop, Partition: 4, PartitionDevice: part, Mount: mnt})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Table || !r.Kernel || !r.FS || r.FSBytes != 1023*mib-starts[3] {
		t.Fatalf("grow: %+v", r)
	}
	var after unix.Statfs_t
	unix.Statfs(mnt, &after)
	if total := int64(after.Blocks) * after.Bsize; total < 900*mib {
		t.Fatalf("the mounted file system has %d bytes after the growth (was %d)", total, int64(before.Blocks)*before.Bsize)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "file")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file after the growth: %v", err)
	}
	if r, err := Grow(Options{Disk: loop, Partition: 4, PartitionDevice: part, Mount: mnt}); err != nil || r.Table || r.Kernel || r.FS {
		t.Fatalf("second run: %+v %v, want nothing to do", r, err)
	}
}

func TestParseSuperblock(t *testing.T) {
	sb := make([]byte, 1024)
	if _, _, err := parseSuperblock(sb); err == nil {
		t.Fatal("a zero superblock parsed")
	}
	sb[0x38], sb[0x39] = 0x53, 0xEF
	sb[0x18] = 2                    // 4 KiB blocks
	sb[0x04], sb[0x05] = 0x00, 0x10 // 4096 blocks, low word
	sb[0x60] = 0x80                 // 64bit
	sb[0x150] = 1                   // high word: 2^32 more
	blocks, bs, err := parseSuperblock(sb)
	if err != nil || bs != 4096 || blocks != 1<<32+4096 {
		t.Fatalf("got %d blocks of %d: %v", blocks, bs, err)
	}
}

// hasCapSysResource reports whether the process may resize a mounted
// ext4 (CAP_SYS_RESOURCE, bit 24 of CapEff).
func hasCapSysResource(t *testing.T) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(hex), "%x", &caps)
			return caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}
