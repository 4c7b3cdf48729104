package vm

import (
	"fmt"
	"io"

	"github.com/pc2/pc2/image/bootpart"
)

// ReadBootFile returns a file (a slash-separated path) from the disk's
// first partition, a FAT16 file system as image.Build writes it
// (bootpart.ReadFile), by its long or 8.3 names (case-insensitive). This is what
// a boot loader does for direct kernel boot: QEMU's -kernel and -append
// then get what is on the disk now, including gokrazy's edits of
// cmdline.txt after an A/B switch.
//
// It understands exactly the disks image.Build writes: a GPT or MBR
// partition table and FAT16 with 512-byte sectors.
func ReadBootFile(disk io.ReaderAt, name string) ([]byte, error) {
	b, err := bootpart.ReadFile(disk, name)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	return b, nil
}
