// Package qemu is the test board: the x86 board as seen by
// qemu-system-x86_64 with OVMF (or SeaBIOS), virtio disk and network, and
// the console on the first serial port so tests can read the boot log from
// -nographic.
package qemu

import (
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/x86"
)

// Board is the QEMU board. It shares the x86 kernel and boot loaders (UEFI
// and BIOS) so that QEMU tests exercise the same boot paths as real PCs;
// only the console differs. pci=nommconf (from kernel.amd64's own
// cmdline.txt) avoids slow MMCONFIG probing under TCG.
var Board = func() boards.Board {
	b := x86.Board
	b.Name = "qemu"
	b.Cmdline = []string{
		"ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic",
		"pci=nommconf", "console=ttyS0,115200",
	}
	return b
}()
