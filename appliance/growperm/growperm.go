// Package growperm makes the perm partition use the whole disk it is on:
// the image is written at its own size (a few hundred MiB) onto a card or
// disk of any size, by pc2 flash, dd, Etcher or Raspberry Pi Imager, and
// on every boot the device grows perm, the last partition, to the end of
// the disk and the mounted ext4 on it, online.
//
// The steps, each one done only when it is still needed, so that an
// interrupted growth completes on the next boot:
//
//  1. The partition table: GPT (its backup header moved to the disk's
//     new end, by go-diskfs, which writes and syncs the backup before the
//     primary, so a power cut leaves one valid table of either size) or
//     MBR (one sector). The partition's end is aligned down to 1 MiB.
//  2. The kernel's view of the partition (BLKPG_RESIZE_PARTITION on the
//     disk), which the kernel allows while the partition is mounted.
//  3. The ext4 file system (EXT4_IOC_RESIZE_FS on the mount point): the
//     kernel adds block groups one by one and journals each, so a power
//     cut leaves a consistent file system of some size in between.
//
// No e2fsprogs on the device: the superblock's block count and size are
// read from the partition, and the resize is the kernel's.
package growperm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/diskfs/go-diskfs/partition/part"
	"golang.org/x/sys/unix"
)

// align is the partition end alignment in bytes.
const align = 1 << 20

// PermPartition is perm's number on an appliance disk (package image:
// boot, root A, root B, perm).
const PermPartition = 4

// Options say what to grow.
type Options struct {
	// Disk is the whole disk's block device (or an image file in tests),
	// e.g. /dev/mmcblk0.
	Disk string
	// Partition is perm's number on it (the last partition: 4).
	Partition int
	// PartitionDevice is perm's block device, e.g. /dev/mmcblk0p4; empty
	// skips the kernel and file system steps (an image file).
	PartitionDevice string
	// Mount is where perm's ext4 is mounted (/perm); empty skips the file
	// system step.
	Mount  string
	Logger *slog.Logger
}

// Result says what Grow did.
type Result struct {
	// DiskBytes is the disk's size; PartitionBytes perm's size after
	// the growth; FSBytes the file system's size after it (0 when not
	// looked at).
	DiskBytes, PartitionBytes, FSBytes int64
	// Table, Kernel and FS report which steps changed something.
	Table, Kernel, FS bool
}

// Grow grows perm to the end of the disk (see the package doc).
func Grow(o Options) (Result, error) {
	var r Result
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(o.Disk, os.O_RDWR, 0)
	if err != nil {
		return r, fmt.Errorf("growperm: %w", err)
	}
	defer f.Close()
	if r.DiskBytes, err = size(f); err != nil {
		return r, fmt.Errorf("growperm: size of %s: %w", o.Disk, err)
	}
	start, length, changed, err := growTable(f, r.DiskBytes, o.Partition)
	if err != nil {
		return r, fmt.Errorf("growperm: %s: %w", o.Disk, err)
	}
	r.Table, r.PartitionBytes = changed, length
	if changed {
		log.Info("perm partition grown in the partition table", "disk", o.Disk, "bytes", length)
	}
	if o.PartitionDevice == "" {
		return r, nil
	}
	kernel, err := kernelSize(o.PartitionDevice)
	if err != nil {
		return r, fmt.Errorf("growperm: %w", err)
	}
	if kernel < length {
		if err := resizePartition(f, o.Partition, start, length); err != nil {
			return r, fmt.Errorf("growperm: tell the kernel about %s: %w", o.PartitionDevice, err)
		}
		r.Kernel = true
		log.Info("perm partition grown in the kernel", "device", o.PartitionDevice, "bytes", length)
	}
	if o.Mount == "" {
		return r, nil
	}
	blocks, blockSize, err := ext4Size(o.PartitionDevice)
	if err != nil {
		return r, fmt.Errorf("growperm: %w", err)
	}
	r.FSBytes = int64(blocks) * blockSize
	want := uint64(length / blockSize)
	if want > blocks {
		if err := resizeFS(o.Mount, want); err != nil {
			return r, fmt.Errorf("growperm: grow the file system on %s to %d blocks: %w", o.Mount, want, err)
		}
		r.FS, r.FSBytes = true, int64(want)*blockSize
		log.Info("perm file system grown", "mount", o.Mount, "bytes", r.FSBytes)
	}
	return r, nil
}

// size is the size of a block device or file.
func size(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	var n uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return 0, errno
	}
	return int64(n), nil
}

// growTable extends partition n to the end of a disk of diskBytes
// (aligned down to 1 MiB) in its GPT or MBR, and returns the partition's
// start and length in bytes and whether the table changed.
func growTable(f *os.File, diskBytes int64, n int) (start, length int64, changed bool, err error) {
	if t, gerr := gpt.Read(f, 512, 512); gerr == nil {
		return growGPT(f, t, diskBytes, n)
	}
	t, err := mbr.Read(f, 512, 512)
	if err != nil {
		return 0, 0, false, fmt.Errorf("no GPT or MBR partition table: %w", err)
	}
	return growMBR(f, t, diskBytes, n)
}

func growGPT(f *os.File, t *gpt.Table, diskBytes int64, n int) (int64, int64, bool, error) {
	if n < 1 || n > len(t.Partitions) || t.Partitions[n-1].Start == 0 {
		return 0, 0, false, fmt.Errorf("GPT has no partition %d", n)
	}
	p := t.Partitions[n-1]
	if err := checkLast(t.GetPartitions(), n); err != nil {
		return 0, 0, false, err
	}
	t.Resize(uint64(diskBytes))
	end := (t.LastDataSector()+1)/(align/512)*(align/512) - 1
	start, length := int64(p.Start)*512, int64(p.End-p.Start+1)*512
	if end <= p.End && !t.RecoveredFromBackup && backupAtEnd(f, diskBytes) {
		return start, length, false, nil
	}
	if end > p.End {
		p.End = end
		p.Size = (p.End - p.Start + 1) * 512
	}
	if err := t.Write(f, diskBytes); err != nil {
		return 0, 0, false, err
	}
	return start, int64(p.End-p.Start+1) * 512, true, nil
}

// checkLast refuses to grow partition n unless it starts after every
// other of parts (the table's, in order).
func checkLast(parts []part.Partition, n int) error {
	for i, q := range parts {
		if i != n-1 && q.GetSize() > 0 && q.GetStart() > parts[n-1].GetStart() {
			return fmt.Errorf("partition %d is not the last on the disk", n)
		}
	}
	return nil
}

// backupAtEnd reports whether the disk's last sector holds a GPT header
// (the backup is where it belongs).
func backupAtEnd(f *os.File, diskBytes int64) bool {
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, diskBytes-512); err != nil {
		return false
	}
	return string(b) == "EFI PART"
}

func growMBR(f *os.File, t *mbr.Table, diskBytes int64, n int) (int64, int64, bool, error) {
	if n < 1 || n > len(t.Partitions) || t.Partitions[n-1].Size == 0 {
		return 0, 0, false, fmt.Errorf("MBR has no partition %d", n)
	}
	p := t.Partitions[n-1]
	if err := checkLast(t.GetPartitions(), n); err != nil {
		return 0, 0, false, err
	}
	sectors := diskBytes / 512
	if sectors > 1<<32-1 {
		sectors = 1<<32 - 1 // an MBR addresses 2 TiB
	}
	end := sectors / (align / 512) * (align / 512)
	start := int64(p.Start) * 512
	if end-int64(p.Start) <= int64(p.Size) {
		return start, int64(p.Size) * 512, false, nil
	}
	p.Size = uint32(end - int64(p.Start))
	if err := t.Write(f, diskBytes); err != nil {
		return 0, 0, false, err
	}
	if err := f.Sync(); err != nil {
		return 0, 0, false, err
	}
	return start, int64(p.Size) * 512, true, nil
}

// kernelSize is the size of a partition as the kernel sees it
// (/sys/class/block/<name>/size, in 512-byte sectors).
func kernelSize(dev string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	return n * 512, nil
}

// blkpgPartition and blkpgIoctlArg are linux/blkpg.h's structures.
type blkpgPartition struct {
	Start, Length int64
	Pno           int32
	Devname       [64]byte
	Volname       [64]byte
	_             [4]byte // padding to the C struct's alignment
}

type blkpgIoctlArg struct {
	Op, Flags, Datalen int32
	_                  [4]byte
	Data               *blkpgPartition
}

const (
	blkpg                = 0x1269 // BLKPG
	blkpgResizePartition = 3      // BLKPG_RESIZE_PARTITION
)

// resizePartition tells the kernel partition n of the disk f now spans
// length bytes from start.
func resizePartition(f *os.File, n int, start, length int64) error {
	p := blkpgPartition{Start: start, Length: length, Pno: int32(n)}
	arg := blkpgIoctlArg{Op: blkpgResizePartition, Datalen: int32(unsafe.Sizeof(p)), Data: &p}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkpg, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return errno
	}
	return nil
}

// ext4Size reads the block count and block size from the ext4 superblock
// on dev.
func ext4Size(dev string) (blocks uint64, blockSize int64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, fmt.Errorf("superblock of %s: %w", dev, err)
	}
	return parseSuperblock(sb)
}

// parseSuperblock reads the block count and size of an ext4 superblock.
func parseSuperblock(sb []byte) (uint64, int64, error) {
	if len(sb) < 0x158 || binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, 0, errors.New("not an ext4 superblock")
	}
	logBlock := binary.LittleEndian.Uint32(sb[0x18:])
	if logBlock > 6 {
		return 0, 0, fmt.Errorf("ext4 block size 2^%d KiB", logBlock)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x04:]))
	if incompat := binary.LittleEndian.Uint32(sb[0x60:]); incompat&0x80 != 0 { // 64bit
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	return blocks, 1024 << logBlock, nil
}

// ext4ResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4ResizeFS = 0x40086610

// resizeFS grows the ext4 mounted at mount to blocks blocks.
func resizeFS(mount string, blocks uint64) error {
	d, err := os.Open(mount)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ext4ResizeFS, uintptr(unsafe.Pointer(&blocks))); errno != 0 {
		return errno
	}
	return nil
}
