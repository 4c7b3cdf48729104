// Package rpi is the Raspberry Pi board: Pi 3B+, Pi 4, Pi 5 and Zero 2 W
// (and the Pi 3B) in 64-bit mode, with the Raspberry Pi kernel from
// github.com/gokrazy/kernel.rpi (the only gokrazy kernel that supports the
// Pi 5) and the boot firmware from github.com/gokrazy/firmware.
//
// The disk is MBR, not GPT: the Pi 3 family's boot ROM reads only MBR
// (the Pi 4 and 5 read both). Root selection is then
// root=PARTUUID=<disk signature>-02, which gokrazy's init rewrites to -03
// on an A/B switch.
//
// Boot partition (the Pi firmware reads FAT16 and FAT32): the firmware
// files, the kernel as vmlinuz (config.txt's kernel= names it; the Pi 5
// has no start*.elf, its EEPROM reads config.txt itself), one device tree
// per model (the firmware picks the model's file by name), config.txt and
// cmdline.txt. Untested on hardware here: no Pi is attached to the build
// machines and QEMU's raspi models are not a faithful test of the boot.
//
// Root file system: brcmfmac's Wi-Fi firmware under /lib/firmware/brcm for
// the Pi 3B, 3B+, 4B and 5 (WiFiFirmware); Debian has none for the
// Zero 2 W's chip.
package rpi

import (
	"github.com/pc2/pc2/boards"

	// Firmware and kernel are data; the blank imports pin the modules.
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/kernel.rpi"
)

// Models maps each supported model to the device tree its firmware loads
// (the Raspberry Pi kernel's names, bcm27xx-rpi-*).
var Models = map[string]string{
	"Raspberry Pi 3 Model B":      "bcm2710-rpi-3-b.dtb",
	"Raspberry Pi 3 Model B Plus": "bcm2710-rpi-3-b-plus.dtb",
	"Raspberry Pi Zero 2 W":       "bcm2710-rpi-zero-2-w.dtb",
	"Raspberry Pi 4 Model B":      "bcm2711-rpi-4-b.dtb",
	"Raspberry Pi 5 Model B":      "bcm2712-rpi-5-b.dtb",
	// Pi 5 boards with the D0 stepping of the SoC.
	"Raspberry Pi 5 Model B (D0)": "bcm2712d0-rpi-5-b.dtb",
}

// WiFiFirmware maps each model whose Wi-Fi the image supports to the
// brcmfmac firmware base name its chip loads (the driver's chip table, in
// kernel.rpi's brcmfmac.ko). For a model whose device tree's first root
// compatible is C, the driver requests brcm/<base>.C.bin, falling back to
// brcm/<base>.bin, then the NVRAM brcm/<base>.C.txt (falling back to
// brcm/<base>.txt, which Debian does not ship; the NVRAM is required) and
// the optional regulatory brcm/<base>.clm_blob. boards_test checks these
// names against the device trees and the driver.
//
// The Raspberry Pi Zero 2 W is not here: its chip (a CYW43436, which
// brcmfmac names brcmfmac43430b0-sdio; some boards have a CYW43436s)
// needs firmware that Debian does not package (Raspberry Pi OS ships
// Synaptics' 43436 files); without it brcmfmac fails to start the chip and
// the Zero 2 W runs without Wi-Fi.
var WiFiFirmware = map[string]string{
	"Raspberry Pi 3 Model B":      "brcmfmac43430-sdio", // CYW43438
	"Raspberry Pi 3 Model B Plus": "brcmfmac43455-sdio", // CYW43455
	"Raspberry Pi 4 Model B":      "brcmfmac43455-sdio",
	"Raspberry Pi 5 Model B":      "brcmfmac43455-sdio",
	"Raspberry Pi 5 Model B (D0)": "brcmfmac43455-sdio",
}

// LinuxFirmware is the Wi-Fi firmware of WiFiFirmware's models, from
// Debian bookworm's firmware-brcm80211 (about 1.1 MB; see
// boards/README.md). The .bin and .clm_blob are links to cypress/ in the
// package; the image holds them as files under these names.
var LinuxFirmware = []string{
	// Pi 3B.
	"brcm/brcmfmac43430-sdio.bin",
	"brcm/brcmfmac43430-sdio.clm_blob",
	"brcm/brcmfmac43430-sdio.raspberrypi,3-model-b.txt",
	// Pi 3B+, 4B and 5: the same chip and firmware, one NVRAM per board.
	"brcm/brcmfmac43455-sdio.bin",
	"brcm/brcmfmac43455-sdio.clm_blob",
	"brcm/brcmfmac43455-sdio.raspberrypi,3-model-b-plus.txt",
	"brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt",
}

// LinuxFirmwareLinks: bookworm's package has no NVRAM for the Pi 5. Debian
// trixie's firmware-brcm80211 (linux-firmware 20250410) links the Pi 5's
// name to the Pi 4B's file, and the files above are byte-identical in both
// releases, so a Pi 5 gets what trixie's package would give it.
var LinuxFirmwareLinks = map[string]string{
	"brcm/brcmfmac43455-sdio.raspberrypi,5-model-b.txt": "brcmfmac43455-sdio.raspberrypi,4-model-b.txt",
}

// ConfigTxt is the firmware configuration.
//
//   - arm_64bit=1: start the CPU in AArch64 mode (the kernel is arm64).
//   - enable_uart=1: the serial console on GPIO 14/15 (serial0); on the Pi
//     3 family this also fixes the core clock so the mini UART's baud
//     rate is stable.
//   - kernel=vmlinuz: the file name kernel.rpi uses; without it each model
//     would look for its own kernel8.img/kernel_2712.img.
//   - disable_splash=1: no rainbow screen, a few hundred ms faster.
const ConfigTxt = `# PC2 appliance (boards/rpi); read by the Raspberry Pi firmware.
arm_64bit=1
enable_uart=1
kernel=vmlinuz
disable_splash=1
`

// Board is the Raspberry Pi board. console=serial0 is the GPIO UART on
// every model (the firmware's device tree alias); tty1 is HDMI. The last
// console= is /dev/console, where gokrazy logs.
var Board = boards.Board{
	Name:           "rpi",
	GOARCH:         "arm64",
	KernelModule:   "github.com/gokrazy/kernel.rpi",
	KernelImage:    "vmlinuz",
	FirmwareModule: "github.com/gokrazy/firmware",
	// bootcode.bin: Pi 3 family second stage; start.elf/fixup.dat: Pi 3
	// family and Zero 2 W; start4.elf/fixup4.dat: Pi 4. The _x, _cd and
	// _db variants (camera, cut-down, debug) are not needed.
	FirmwareFiles: []string{"bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat"},
	// One per entry of Models (boards_test checks it).
	DeviceTrees: []string{
		"bcm2710-rpi-3-b.dtb", "bcm2710-rpi-3-b-plus.dtb", "bcm2710-rpi-zero-2-w.dtb",
		"bcm2711-rpi-4-b.dtb", "bcm2712-rpi-5-b.dtb", "bcm2712d0-rpi-5-b.dtb",
	},
	ConfigTxt: ConfigTxt,
	Cmdline: []string{
		"ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic",
		"console=tty1", "console=serial0,115200",
	},
	Boot:               boards.BootRPiFirmware,
	MBR:                true,
	LinuxFirmware:      LinuxFirmware,
	LinuxFirmwareLinks: LinuxFirmwareLinks,
}
