// Package qemuarm64 is the arm64 test board: QEMU's generic "virt" machine
// (qemu-system-aarch64 -M virt) with the upstream kernel from
// github.com/gokrazy/kernel.arm64, virtio disk and network, and the console
// on the PL011 UART so tests can read the boot log.
//
// It exists to test the arm64 userland (the same cross-compiled programs
// the Raspberry Pi runs) on machines without Pi hardware; QEMU's raspi
// models are not a reliable stand-in for a real Pi.
//
// Boot: direct kernel boot (boards.BootDirectKernel). kernel.arm64 ships an
// uncompressed Image (vmlinuz, about 57 MiB, with an EFI stub) and no device
// trees: under -M virt QEMU generates the device tree itself. UEFI
// (AAVMF + systemd-boot) would also work but Debian ships systemd-boot's
// arm64 binary only in the arm64 architecture's package, which an amd64
// build host can install only after enabling multiarch, and the firmware
// adds seconds to every TCG boot. The image is GPT like x86's, so the root=
// form and gokrazy's A/B edits are the same.
package qemuarm64

import (
	"github.com/pc2/pc2/boards"

	// Kernel and modules are data; the blank import pins the module.
	_ "github.com/gokrazy/kernel.arm64"
)

// Board is the QEMU arm64 board. console=ttyAMA0 is -M virt's PL011 UART,
// which -nographic connects to stdio.
var Board = boards.Board{
	Name:         "qemuarm64",
	GOARCH:       "arm64",
	KernelModule: "github.com/gokrazy/kernel.arm64",
	KernelImage:  "vmlinuz",
	Cmdline: []string{
		"ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic",
		"console=ttyAMA0,115200",
	},
	Boot: boards.BootDirectKernel,
	// Two 59 MB arm64 Images, and a third while an update writes one.
	BootSize: 256 << 20,
}
