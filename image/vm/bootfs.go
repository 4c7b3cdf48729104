package vm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pc2/pc2/image/fat16"
)

// ReadBootFile returns a file from the root directory of the disk's first
// partition, a FAT16 file system as image.Build writes it (fat16.ReadFile),
// by its long or 8.3 name (case-insensitive). This is what
// a boot loader does for direct kernel boot: QEMU's -kernel and -append
// then get what is on the disk now, including gokrazy's edits of
// cmdline.txt after an A/B switch.
//
// It understands exactly the disks image.Build writes: a GPT or MBR
// partition table, FAT16 with 512-byte sectors and the file in the root
// directory.
func ReadBootFile(disk io.ReaderAt, name string) ([]byte, error) {
	part, err := firstPartition(disk)
	if err != nil {
		return nil, err
	}
	b, err := fat16.ReadFile(io.NewSectionReader(disk, part, 1<<62), name)
	if err != nil {
		return nil, fmt.Errorf("vm: boot partition: %w", err)
	}
	return b, nil
}

// firstPartition returns the byte offset of partition 1 (GPT, else MBR).
func firstPartition(disk io.ReaderAt) (int64, error) {
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
		return 0, errors.New("vm: no partition table")
	}
	return int64(binary.LittleEndian.Uint32(b[446+8:])) * 512, nil
}
