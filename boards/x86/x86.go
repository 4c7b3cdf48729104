// Package x86 is the board for PCs and x86-64 servers and VMs: the upstream
// kernel from github.com/gokrazy/kernel.amd64, booted by UEFI firmware
// through Debian's systemd-boot, or by a legacy BIOS through SYSLINUX from
// the same disk.
//
// BIOS boot: the protective MBR holds syslinux's gptmbr.bin, which starts
// the GPT partition marked "legacy BIOS bootable" (the boot partition);
// its boot sector loads ldlinux.sys, which reads syslinux.cfg. SYSLINUX
// because Debian packages it (gokrazy's own MBR loader lives in a module
// that cannot be imported), its installer writes into a FAT image file
// through mtools without mounting it, and it reads FAT16, so the one boot
// partition serves both firmware kinds.
package x86

import (
	"github.com/pc2/pc2/boards"

	// The kernel is data (vmlinuz, lib/modules), not code; importing its
	// empty Go package pins the module version in go.mod.
	_ "github.com/gokrazy/kernel.amd64"
)

// Board is the x86-64 board. The console goes to the screen (tty0) and the
// first serial port, so headless boxes can be debugged too; the last
// console= is /dev/console.
var Board = boards.Board{
	Name:         "x86",
	GOARCH:       "amd64",
	KernelModule: "github.com/gokrazy/kernel.amd64",
	KernelImage:  "vmlinuz",
	Cmdline: []string{
		"ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic",
		"console=ttyS0,115200", "console=tty0",
	},
	Boot:             boards.BootUEFISystemdBoot,
	EFIBootloader:    "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
	EFIRemovablePath: "EFI/BOOT/BOOTX64.EFI",
	BIOSBootCode:     "/usr/lib/SYSLINUX/gptmbr.bin",
}
