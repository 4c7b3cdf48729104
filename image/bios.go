package image

// Legacy BIOS boot, for boards with Board.BIOSBootCode (x86, qemu). The disk
// stays a GPT disk that UEFI boots through systemd-boot; three additions let
// a BIOS boot it too:
//
//   - the protective MBR's boot code area (bytes 0-439) holds syslinux's
//     gptmbr.bin, which reads the GPT and chain-loads the first sector of
//     the partition whose "legacy BIOS bootable" attribute (bit 2) is set;
//   - p1, the FAT16 boot partition, carries that attribute (go-diskfs
//     writes Partition.Attributes into both GPT entry arrays and their
//     CRCs);
//   - SYSLINUX is installed on p1 by Debian's syslinux installer: its boot
//     sector code replaces the FAT16 boot sector's (the BPB stays), and
//     ldlinux.sys and ldlinux.c32 land in the root directory. ldlinux.sys
//     reads /syslinux.cfg, which starts /vmlinuz with the same command line
//     as cmdline.txt and the systemd-boot entry.
//
// The installer works on boot.img, a plain file, through mtools, so the
// build needs no loop device or mount, and boot.img (the update artifact)
// carries the loader: ldlinux.sys records its sectors relative to the file
// system, and the boot sector learns the partition's offset from
// gptmbr.bin's hand-over (or the BPB's hidden sectors), so the partition
// boots wherever it is written. The installer takes file times from
// SOURCE_DATE_EPOCH (mtools honours it); TZ=UTC makes the FAT's local-time
// fields the same everywhere; nothing else it writes varies.
//
// syslinux.cfg is padded like cmdline.txt and gokrazy.conf: spaces after
// the final '\n' up to cmdlineFileSize, with the APPEND line (the command
// line) last. gokrazy's init does not know this file, so an A/B switch must
// rewrite it too (image/README.md says how): root= is the one in the file
// and keeps its length; a test boot's flag goes before the final '\n'.
// Unlike gokrazy.conf, its lines cannot end in '\r' (SYSLINUX reads only
// '\n' as a line end), so gokrazy's test-boot edit, which inserts its flag
// before every '\n', must not be applied to it as it is.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/image/fat16"
)

const (
	// syslinuxCfg is SYSLINUX's configuration, in the boot partition's root
	// directory (where ldlinux.sys is, and where the readers of package
	// fat16 can rewrite it).
	syslinuxCfg = "/syslinux.cfg"
	// legacyBIOSBootable is the GPT partition attribute (bit 2) by which
	// gptmbr.bin finds the partition to boot.
	legacyBIOSBootable = 1 << 2
	// mbrBootCodeSize is the MBR's boot code area; the disk signature
	// follows at 440, the partition table at 446.
	mbrBootCodeSize = 440
	// syslinuxInstaller is the installer from Debian's syslinux package,
	// which also ships the board's gptmbr.bin.
	syslinuxInstaller = "syslinux"
)

// syslinuxFiles are what the installer adds to the boot partition's root.
var syslinuxFiles = []string{"ldlinux.sys", "ldlinux.c32"}

// syslinuxConfig is syslinux.cfg, unpadded, for the kernel at /kernel.
// SERIAL must be the first line; NOESCAPE and ALLOWOPTIONS 0 keep a
// console user from editing the command line (init=/bin/sh would bypass
// the appliance's password), like systemd-boot's "editor no".
func syslinuxConfig(kernel, cmdline string) string {
	return strings.Join([]string{
		"SERIAL 0 115200",
		"DEFAULT pc2",
		"PROMPT 0",
		"NOESCAPE 1",
		"ALLOWOPTIONS 0",
		"LABEL pc2",
		"LINUX /" + kernel,
		"APPEND " + cmdline,
	}, "\n") + "\n"
}

// installSyslinux installs SYSLINUX on the FAT16 image boot (see the
// comment at the top of this file) and returns the result.
func installSyslinux(boot []byte, mtime time.Time) ([]byte, error) {
	for _, name := range syslinuxFiles {
		// The installer would overwrite it (a boot file of the caller's).
		if _, err := fat16.ReadFile(bytes.NewReader(boot), name); err == nil {
			return nil, fmt.Errorf("%w: boot partition already holds %s, which SYSLINUX writes", ErrInvalidOptions, name)
		}
	}
	dir, err := os.MkdirTemp("", "pc2-syslinux-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "boot.img")
	if err := writeSparseFile(p, boot); err != nil {
		return nil, err
	}
	cmd := exec.Command(syslinuxInstaller, "--install", p)
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", mtime.Unix()),
		"TZ=UTC",
		"TMPDIR="+dir,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("syslinux installer (apt-get install syslinux): %w\n%s", err, out)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	// The installer exits 0 even when an mtools step fails (it only
	// warns), so check what it was to write.
	if !bytes.Equal(img[3:11], []byte("SYSLINUX")) {
		return nil, fmt.Errorf("syslinux installer did not write the boot sector (OEM name %q)\n%s", img[3:11], out)
	}
	for _, name := range syslinuxFiles {
		if b, err := fat16.ReadFile(bytes.NewReader(img), name); err != nil || len(b) == 0 {
			return nil, fmt.Errorf("syslinux installer did not write %s (%v)\n%s", name, err, out)
		}
	}
	return img, nil
}

// writeBIOSBootCode writes the MBR boot code from path into the first
// sector of disk, leaving the disk signature and partition table alone.
func writeBIOSBootCode(disk *os.File, path string) error {
	code, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("BIOS boot code (apt-get install syslinux): %w", err)
	}
	if len(code) == 0 || len(code) > mbrBootCodeSize {
		return fmt.Errorf("BIOS boot code %s is %d bytes, want 1 to %d", path, len(code), mbrBootCodeSize)
	}
	if _, err := disk.WriteAt(code, 0); err != nil {
		return fmt.Errorf("BIOS boot code: %w", err)
	}
	return nil
}
