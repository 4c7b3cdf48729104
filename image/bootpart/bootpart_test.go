package bootpart

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/pc2/pc2/image/fat16"
)

// memDisk is a writable disk in memory.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(m).ReadAt(p, off) }

func (m memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write past the end")
	}
	return copy(m[off:], p), nil
}

// syncDisk counts syncs.
type syncDisk struct {
	memDisk
	syncs int
}

func (s *syncDisk) Sync() error { s.syncs++; return nil }

// TestNested reads, rewrites and lists files in subdirectories of partition
// 1 of an MBR disk.
func TestNested(t *testing.T) {
	files := map[string][]byte{
		"cmdline.txt":                 []byte("root=x\n"),
		"loader/entries/gokrazy.conf": []byte("title gokrazy\noptions root=x\n"),
		"EFI/BOOT/BOOTX64.EFI":        bytes.Repeat([]byte{0xaa}, 3000),
	}
	fs := fat16.New(fat16.Options{Size: 8 << 20, ModTime: time.Unix(1700000000, 0)})
	for p, b := range files {
		fs.Add(p, b)
	}
	part, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	const start = 2048 // LBA of partition 1
	disk := make(memDisk, start*512+len(part))
	binary.LittleEndian.PutUint32(disk[446+8:], start)
	disk[510], disk[511] = 0x55, 0xaa
	copy(disk[start*512:], part)

	files["loader/entries/gokrazy.conf"] = []byte("title gokrazy\noptions root=y\n")
	if err := Rewrite(disk, "/loader/entries/gokrazy.conf", files["loader/entries/gokrazy.conf"]); err != nil {
		t.Fatal(err)
	}
	// Replace: new contents of another size, each phase synced.
	files["EFI/BOOT/BOOTX64.EFI"] = bytes.Repeat([]byte{0xbb}, 9000)
	sd := &syncDisk{memDisk: disk}
	if err := Replace(sd, "EFI/BOOT/BOOTX64.EFI", files["EFI/BOOT/BOOTX64.EFI"]); err != nil {
		t.Fatal(err)
	}
	if sd.syncs < 2 {
		t.Errorf("Replace synced %d times, want each phase synced", sd.syncs)
	}
	seen := 0
	err = Walk(disk, func(p string, size int64) error {
		seen++
		want, ok := files[p]
		if !ok || size != int64(len(want)) {
			t.Errorf("Walk: %s, %d bytes; want one of the files added", p, size)
		}
		if got, err := ReadFile(disk, p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%s): %q, %v; want %q", p, got, err, want)
		}
		return nil
	})
	if err != nil || seen != len(files) {
		t.Errorf("Walk: %v after %d files, want nil after %d", err, seen, len(files))
	}
}
