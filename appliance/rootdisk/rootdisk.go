// Package rootdisk finds the disk the running root file system is on, for
// the device code that reads or writes the appliance's own partitions (the
// settings on the boot partition, the updater's A/B roots). It asks sysfs:
// /sys/dev/block/<major:minor of "/"> links to .../block/<disk>/<partition>.
package rootdisk

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Disk is the disk holding the root file system.
type Disk struct {
	// Path is the whole disk's block device: /dev/vda for a root on
	// /dev/vda2, /dev/mmcblk0 for one on /dev/mmcblk0p2.
	Path string
	// Root is the number of the partition the root file system is on.
	Root int
}

// Partition returns the block device of partition n of the disk: vda ->
// vda2; mmcblk0, nvme0n1 (names ending in a digit) -> mmcblk0p2, nvme0n1p2.
func (d *Disk) Partition(n int) string {
	if c := d.Path[len(d.Path)-1]; c >= '0' && c <= '9' {
		return fmt.Sprintf("%sp%d", d.Path, n)
	}
	return fmt.Sprintf("%s%d", d.Path, n)
}

// Find returns the disk the running root file system is on.
func Find() (*Disk, error) {
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		return nil, fmt.Errorf("rootdisk: stat /: %w", err)
	}
	return find("/sys/dev/block", "/dev", unix.Major(st.Dev), unix.Minor(st.Dev))
}

// find looks device major:minor up in sysDevBlock (/sys/dev/block) and
// names the disk in devDir (/dev).
func find(sysDevBlock, devDir string, major, minor uint32) (*Disk, error) {
	part, err := filepath.EvalSymlinks(filepath.Join(sysDevBlock, fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return nil, fmt.Errorf("rootdisk: the root file system's device %d:%d: %w", major, minor, err)
	}
	b, err := os.ReadFile(filepath.Join(part, "partition"))
	if err != nil {
		return nil, fmt.Errorf("rootdisk: root device %s is not a partition", filepath.Base(part))
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("rootdisk: root device %s: partition number %q", filepath.Base(part), strings.TrimSpace(string(b)))
	}
	disk := filepath.Base(filepath.Dir(part))
	if disk == "" || strings.ContainsAny(disk, "/.") {
		return nil, fmt.Errorf("rootdisk: no disk above %s", part)
	}
	return &Disk{Path: filepath.Join(devDir, disk), Root: n}, nil
}
