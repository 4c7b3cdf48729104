// Package bootpart reads and changes files on the boot partition of an
// appliance disk (an image file or a block device): partition 1, a FAT16
// file system as image.Build writes it. It understands exactly those disks:
// a GPT or MBR partition table with 512-byte sectors and FAT16 (package
// fat16). Files are named by slash-separated paths from the partition's root
// ("cmdline.txt", "loader/entries/gokrazy.conf").
package bootpart

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pc2/pc2/image/fat16"
)

// Offset returns the byte offset of partition 1 (GPT, else MBR).
func Offset(disk io.ReaderAt) (int64, error) {
	b := make([]byte, 1024)
	if _, err := disk.ReadAt(b, 0); err != nil {
		return 0, fmt.Errorf("partition table: %w", err)
	}
	if string(b[512:520]) == "EFI PART" {
		entries := int64(binary.LittleEndian.Uint64(b[512+72:]))
		e := make([]byte, 128)
		if _, err := disk.ReadAt(e, entries*512); err != nil {
			return 0, fmt.Errorf("GPT entries: %w", err)
		}
		return int64(binary.LittleEndian.Uint64(e[32:])) * 512, nil
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return 0, errors.New("bootpart: no partition table")
	}
	return int64(binary.LittleEndian.Uint32(b[446+8:])) * 512, nil
}

// ReadFile returns the file at path name of the boot partition; each path
// component is matched by its long or 8.3 name, case-insensitive
// (fat16.ReadFile).
func ReadFile(disk io.ReaderAt, name string) ([]byte, error) {
	off, err := Offset(disk)
	if err != nil {
		return nil, err
	}
	b, err := fat16.ReadFile(io.NewSectionReader(disk, off, 1<<62), name)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	return b, nil
}

// Rewrite replaces the existing file at path name of the boot partition in
// place (fat16.Rewrite).
func Rewrite(disk fat16.ReadWriterAt, name string, data []byte) error {
	off, err := Offset(disk)
	if err != nil {
		return err
	}
	if err := fat16.Rewrite(offsetRW{disk, off}, name, data); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	return nil
}

// Replace gives the existing file at path name of the boot partition new
// contents without writing over the old ones (fat16.Replace): a power cut
// leaves the old file or the new one, whole. When disk has a Sync method
// (an *os.File), each phase is synced before the next.
func Replace(disk fat16.ReadWriterAt, name string, data []byte) error {
	off, err := Offset(disk)
	if err != nil {
		return err
	}
	var vol fat16.ReadWriterAt = offsetRW{disk, off}
	if s, ok := disk.(interface{ Sync() error }); ok {
		vol = syncOffsetRW{offsetRW{disk, off}, s}
	}
	if err := fat16.Replace(vol, name, data); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	return nil
}

// Walk calls fn for every file of the boot partition with its path and size
// (fat16.Walk); ReadFile and Rewrite take the paths. An error fn returns
// ends the walk and comes back wrapped, like the partition's own errors.
func Walk(disk io.ReaderAt, fn func(path string, size int64) error) error {
	off, err := Offset(disk)
	if err != nil {
		return err
	}
	if err := fat16.Walk(io.NewSectionReader(disk, off, 1<<62), fn); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	return nil
}

// offsetRW shifts reads and writes by off.
type offsetRW struct {
	rw  fat16.ReadWriterAt
	off int64
}

func (o offsetRW) ReadAt(p []byte, off int64) (int, error)  { return o.rw.ReadAt(p, o.off+off) }
func (o offsetRW) WriteAt(p []byte, off int64) (int, error) { return o.rw.WriteAt(p, o.off+off) }

// syncOffsetRW is an offsetRW whose disk syncs.
type syncOffsetRW struct {
	offsetRW
	s interface{ Sync() error }
}

func (o syncOffsetRW) Sync() error { return o.s.Sync() }
