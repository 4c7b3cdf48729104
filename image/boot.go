package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
)

// bootFiles returns the boot partition's files in the A/B layout of
// package bootslot: slots a and b each get the kernel, the device trees
// and cmdline.txt (root= naming partition 2 or 3), slot a is selected.
// Slot b's kernel and device trees are empty files: its root partition
// is empty too until the first update writes both (a second kernel would
// add 16-59 MB to every image and to every update's boot artifact, and
// the updater selects a slot only once it holds its release's files).
// firmwareDir is the board's FirmwareModule directory ("" when it has
// none). The padded files (cmdline.txt, the selectors) absorb edits in
// place: gokrazy's and bootslot.Select's.
func bootFiles(opts Options, kernelDir, firmwareDir, cmdline string) (map[string][]byte, error) {
	kernel, err := os.ReadFile(filepath.Join(kernelDir, opts.Board.KernelImage))
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	files := map[string][]byte{}
	cmdlines := map[string]string{}
	for _, slot := range []string{bootslot.A, bootslot.B} {
		p, _ := bootslot.Partition(slot)
		c, err := slotCmdline(cmdline, p)
		if err != nil {
			return nil, err
		}
		cmdlines[slot] = c
		if files["/"+slot+"/"+bootslot.Cmdline], err = bootslot.Pad(c + "\n"); err != nil {
			return nil, fmt.Errorf("image: kernel command line too long: %w", err)
		}
		files["/"+slot+"/"+opts.Board.KernelImage] = slotFile(slot, kernel)
	}
	switch opts.Board.Boot {
	case boards.BootDirectKernel:
		// The loader (image/vm) reads config.txt the Pi firmware's way.
		if files["/"+bootslot.ConfigTxt], err = bootslot.NewConfigTxt("kernel="+opts.Board.KernelImage+"\n", bootslot.A); err != nil {
			return nil, err
		}
		return files, nil
	case boards.BootRPiFirmware:
		for _, n := range opts.Board.FirmwareFiles {
			b, err := os.ReadFile(filepath.Join(firmwareDir, n))
			if err != nil {
				return nil, fmt.Errorf("firmware: %w", err)
			}
			files["/"+n] = b
		}
		for _, n := range opts.Board.DeviceTrees {
			b, err := os.ReadFile(filepath.Join(kernelDir, n))
			if err != nil {
				return nil, fmt.Errorf("device tree: %w", err)
			}
			files["/"+bootslot.A+"/"+n] = b
			files["/"+bootslot.B+"/"+n] = slotFile(bootslot.B, b)
		}
		if files["/"+bootslot.ConfigTxt], err = bootslot.NewConfigTxt(opts.Board.ConfigTxt, bootslot.A); err != nil {
			return nil, err
		}
		return files, nil
	case boards.BootUEFISystemdBoot:
	default:
		return nil, fmt.Errorf("image: boot method %q not supported", opts.Board.Boot)
	}
	loader, err := os.ReadFile(opts.Board.EFIBootloader)
	if err != nil {
		return nil, fmt.Errorf("EFI boot loader (apt-get install systemd-boot-efi): %w", err)
	}
	kernelA := bootslot.A + "/" + opts.Board.KernelImage
	// '\r' ends the lines before options: see the package comment.
	entry, err := bootslot.Pad("title PC2\rlinux /" + kernelA + "\roptions " + cmdlines[bootslot.A] + "\n")
	if err != nil {
		return nil, fmt.Errorf("image: kernel command line too long: %w", err)
	}
	files["/"+opts.Board.EFIRemovablePath] = loader
	// editor no: nobody at the console may change the command line
	// (init=/bin/sh would bypass the appliance's password).
	files["/loader/loader.conf"] = []byte("default gokrazy.conf\ntimeout 0\neditor no\n")
	files["/"+bootslot.Entry] = entry
	if opts.Board.BIOSBootCode != "" { // see bios.go
		if files["/"+bootslot.Syslinux], err = bootslot.Pad(syslinuxConfig(kernelA, cmdlines[bootslot.A])); err != nil {
			return nil, fmt.Errorf("image: kernel command line too long: %w", err)
		}
	}
	return files, nil
}

// slotFile is a kernel or device tree file of slot: b for slot a, empty
// for slot b (see bootFiles).
func slotFile(slot string, b []byte) []byte {
	if slot == bootslot.A {
		return b
	}
	return []byte{}
}

// slotCmdline returns cmdline with its root= field naming partition p.
func slotCmdline(cmdline string, p int) (string, error) {
	fields := strings.Fields(cmdline)
	for i, f := range fields {
		if strings.HasPrefix(f, "root=") {
			r, err := bootslot.WithPartition(f, p)
			if err != nil {
				return "", err
			}
			fields[i] = r
			return strings.Join(fields, " "), nil
		}
	}
	return "", fmt.Errorf("image: no root= on the kernel command line %q", cmdline)
}

// bootPartition returns the boot partition image.
func bootPartition(opts Options, kernelDir, firmwareDir, cmdline string, mtime time.Time, g guids) ([]byte, error) {
	files, err := bootFiles(opts, kernelDir, firmwareDir, cmdline)
	if err != nil {
		return nil, err
	}
	for p, b := range opts.BootFiles {
		if _, ok := files[p]; ok {
			return nil, fmt.Errorf("%w: boot file %s would replace the boot method's own", ErrInvalidOptions, p)
		}
		files[p] = b
	}
	if err := opts.Board.CheckBootFiles(files); err != nil {
		return nil, err
	}
	fs := fat16.New(fat16.Options{
		Size:          opts.BootSize,
		Label:         "PC2BOOT",
		VolumeID:      g.volumeID,
		HiddenSectors: uint32(partStart / 512),
		ModTime:       mtime,
	})
	for p, b := range files {
		fs.Add(p, b)
	}
	img, _, err := fs.Bytes()
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	if opts.Board.BIOSBootCode != "" {
		return installSyslinux(img, mtime)
	}
	return img, nil
}
