package update

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/appliance/rootdisk"
)

// Disk is the appliance disk as the updater sees it: the boot partition
// (1) and the two root partitions (2 and 3) as block devices or, in
// tests, files.
type Disk struct {
	Boot  string
	Roots [2]string // partition 2, partition 3
	// Running is the partition the running root file system is on (2 or
	// 3). During a test boot it differs from the one the boot
	// configuration names.
	Running int
}

// Root returns the path of root partition p (2 or 3).
func (d *Disk) Root(p int) string { return d.Roots[p-2] }

// Inactive is the root partition not running.
func (d *Disk) Inactive() int { return 5 - d.Running }

// FindDisk finds the disk the running root file system is on; the root
// must be on partition 2 or 3.
func FindDisk() (*Disk, error) {
	d, err := rootdisk.Find()
	if err != nil {
		return nil, err
	}
	if d.Root != 2 && d.Root != 3 {
		return nil, fmt.Errorf("update: the root file system is on partition %d, not 2 or 3", d.Root)
	}
	return &Disk{Boot: d.Partition(1), Roots: [2]string{d.Partition(2), d.Partition(3)}, Running: d.Root}, nil
}

// sizeOf returns the size of a block device or file.
func sizeOf(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return n, err
}

// writePartition writes the file src to the partition (or file) dst from
// offset 0, syncs, and reads back what it wrote to compare its SHA-256
// with sha (hex): a flash card that drops writes is caught before
// anything boots from it.
func writePartition(dst, src, sha string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer in.Close()
	n, err := sizeOf(in)
	if err != nil {
		return fmt.Errorf("update: %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer out.Close()
	room, err := sizeOf(out)
	if err != nil {
		return fmt.Errorf("update: %s: %w", dst, err)
	}
	if n > room {
		return fmt.Errorf("update: %s (%d bytes) does not fit %s (%d bytes)", filepath.Base(src), n, dst, room)
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(out, in, buf); err != nil {
		return fmt.Errorf("update: write %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("update: sync %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("update: %s: %w", dst, err)
	}
	// Read back through a fresh descriptor (the page cache still has the
	// data; drop it first where the kernel lets us).
	back, err := os.Open(dst)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer back.Close()
	_ = unix.Fadvise(int(back.Fd()), 0, n, unix.FADV_DONTNEED)
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(back, n), buf); err != nil {
		return fmt.Errorf("update: read back %s: %w", dst, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("update: %s reads back as SHA-256 %s after writing %s: the disk does not keep what is written", dst, got, sha)
	}
	return nil
}

// ErrNoSpace is returned when perm cannot hold the staged artifacts.
var ErrNoSpace = errors.New("update: not enough free space on perm to stage the update")

// freeBytes is the space available to unprivileged writers in dir's file
// system (root may use the reserved blocks too; leave them to the user's
// data).
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("update: statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
