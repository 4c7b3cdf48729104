package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/image/fat16"
)

// cmdlineFileSize is the padded size of cmdline.txt and gokrazy.conf. The
// padding (spaces after the final newline) absorbs gokrazy's in-place edits
// that add text, such as " gokrazy.try_boot_inactive=1" (28 bytes); FAT16
// clusters of 1 KiB or more leave slack behind the file for what an edit
// writes past the recorded length.
const cmdlineFileSize = 512

// bootFiles returns the boot partition's files. firmwareDir is the board's
// FirmwareModule directory ("" when it has none).
func bootFiles(opts Options, kernelDir, firmwareDir, cmdline string) (map[string][]byte, error) {
	kernel, err := os.ReadFile(filepath.Join(kernelDir, opts.Board.KernelImage))
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	pad := func(s string) ([]byte, error) {
		if len(s) > cmdlineFileSize-64 {
			return nil, fmt.Errorf("image: kernel command line too long (%d bytes)", len(s))
		}
		return []byte(s + strings.Repeat(" ", cmdlineFileSize-len(s))), nil
	}
	cmdlineTxt, err := pad(cmdline + "\n")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"/" + opts.Board.KernelImage: kernel,
		"/cmdline.txt":               cmdlineTxt,
	}
	switch opts.Board.Boot {
	case boards.BootDirectKernel:
		// The loader (image/vm) reads the kernel and cmdline.txt.
		return files, nil
	case boards.BootRPiFirmware:
		copyIn := func(dir string, names []string) error {
			for _, n := range names {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					return err
				}
				files["/"+n] = b
			}
			return nil
		}
		if err := copyIn(firmwareDir, opts.Board.FirmwareFiles); err != nil {
			return nil, fmt.Errorf("firmware: %w", err)
		}
		if err := copyIn(kernelDir, opts.Board.DeviceTrees); err != nil {
			return nil, fmt.Errorf("device tree: %w", err)
		}
		files["/config.txt"] = []byte(opts.Board.ConfigTxt)
		return files, nil
	case boards.BootUEFISystemdBoot:
	default:
		return nil, fmt.Errorf("image: boot method %q not supported", opts.Board.Boot)
	}
	loader, err := os.ReadFile(opts.Board.EFIBootloader)
	if err != nil {
		return nil, fmt.Errorf("EFI boot loader (apt-get install systemd-boot-efi): %w", err)
	}
	// '\r' ends the lines before options: see the package comment.
	entry, err := pad("title PC2\rlinux /" + opts.Board.KernelImage + "\roptions " + cmdline + "\n")
	if err != nil {
		return nil, err
	}
	files["/"+opts.Board.EFIRemovablePath] = loader
	// editor no: nobody at the console may change the command line
	// (init=/bin/sh would bypass the appliance's password).
	files["/loader/loader.conf"] = []byte("default gokrazy.conf\ntimeout 0\neditor no\n")
	files["/loader/entries/gokrazy.conf"] = entry
	if opts.Board.BIOSBootCode != "" { // see bios.go
		if files[syslinuxCfg], err = pad(syslinuxConfig(opts.Board.KernelImage, cmdline)); err != nil {
			return nil, err
		}
	}
	return files, nil
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
