package vm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/image/bootpart"
	"github.com/pc2/pc2/image/bootslot"
)

// ReadBootFile returns a file (a slash-separated path) from the disk's
// first partition, a FAT16 file system as image.Build writes it
// (bootpart.ReadFile), by its long or 8.3 names (case-insensitive). This is what
// a boot loader does for direct kernel boot: QEMU's -kernel and -append
// then get what is on the disk now, including the slot that config.txt
// selects after an A/B switch (package image/bootslot) and any edit of
// that slot's cmdline.txt.
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

// bootConfig is config.txt as the Pi firmware reads it for one model:
// its settings, and os_prefix, which the firmware prepends to the names
// of the operating system files it loads (the kernel, the device trees
// and cmdline.txt; not its own firmware files). The A/B layout of
// package image/bootslot selects a slot directory with it ("a/" or
// "b/"). The harness reads it for every arm64 guest, direct kernel boot
// and the raspi machines alike, at every VM start, as the firmware does
// at every power-on.
//
// The firmware tests the prefix first and silently falls back to "" when
// the kernel or the device tree is not under it. The harness does not: a
// slot that lacks a file fails the VM start with an error naming the
// file, so that a test notices a broken slot instead of booting whatever
// happens to be elsewhere on the partition.
type bootConfig struct {
	settings map[string]string
	prefix   string
}

// readBootConfig reads config.txt from disk's boot partition with the
// model's conditional sections filters (none: [all] and the lines
// outside sections).
func readBootConfig(disk io.ReaderAt, filters []string) (bootConfig, error) {
	b, err := bootpart.ReadFile(disk, bootslot.ConfigTxt)
	if errors.Is(err, fs.ErrNotExist) {
		return bootConfig{}, fmt.Errorf("no %s on the boot partition; it selects the boot slot (os_prefix) and names the kernel: %w", bootslot.ConfigTxt, err)
	}
	if err != nil {
		return bootConfig{}, err
	}
	s := boards.ParseConfigTxt(string(b), filters)
	return bootConfig{settings: s, prefix: s["os_prefix"]}, nil
}

// read returns the operating system file name: os_prefix + name, a
// plain concatenation as in the firmware ("a/" + "vmlinuz").
func (c bootConfig) read(disk io.ReaderAt, name string) ([]byte, error) {
	b, err := bootpart.ReadFile(disk, c.prefix+name)
	if err != nil && c.prefix != "" {
		return nil, fmt.Errorf("%s (os_prefix=%s in %s): %w", c.prefix+name, c.prefix, bootslot.ConfigTxt, err)
	}
	return b, err
}

// cmdline returns the kernel command line: the first line of os_prefix +
// cmdline.txt (the rest of the file is padding).
func (c bootConfig) cmdline(disk io.ReaderAt) (string, error) {
	b, err := c.read(disk, bootslot.Cmdline)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("%s%s has no command line", c.prefix, bootslot.Cmdline)
	}
	return line, nil
}
