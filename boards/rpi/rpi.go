// Package rpi is the Raspberry Pi board: Pi 3B+, Pi 4, Pi 5 and Zero 2 W
// (and the Pi 3B, the Pi 400 and 500 and the Compute Modules 4 and 5) in
// 64-bit mode, with the Raspberry Pi kernel from
// github.com/gokrazy/kernel.rpi (the only gokrazy kernel that supports the
// Pi 5) and the boot firmware from github.com/gokrazy/firmware.
//
// The disk is MBR, not GPT: the Pi 3 family's boot ROM reads only MBR
// (the Pi 4 and 5 read both). Root selection is then
// root=PARTUUID=<disk signature>-02 or -03, in each boot slot's own
// cmdline.txt.
//
// Boot partition (the Pi firmware reads FAT16 and FAT32), in the A/B
// layout of package image/bootslot: the firmware files and config.txt at
// the root, and in each slot directory (a/, b/) the kernel as vmlinuz
// (config.txt's kernel= names it; the Pi 5 has no start*.elf, its EEPROM
// reads config.txt itself), one device tree per model (the firmware
// picks the model's file by name) and cmdline.txt. config.txt's first
// line, os_prefix=a/ or b/, selects the slot: the firmware prepends it to
// the kernel's, the device tree's and cmdline.txt's names, and an A/B
// switch rewrites it. No Pi is attached to the build machines; QEMU's
// raspi3b and raspi4b machines boot the image from its SD card
// (qemu-tests), but QEMU skips the firmware stage (image/vm does its
// part), so the image builder checks the boot partition against every
// model instead (boards.Board.CheckBootFiles).
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

// Boot chains: what each generation's firmware reads from the boot
// partition before the kernel.
var (
	// The Pi 3 family's boot ROM loads bootcode.bin, which loads the GPU
	// firmware start.elf with its memory split fixup.dat.
	chainPi3 = []string{"bootcode.bin", "start.elf", "fixup.dat"}
	// The Pi 4 family's EEPROM loads start4.elf and fixup4.dat.
	chainPi4 = []string{"start4.elf", "fixup4.dat"}
	// The Pi 5 family's EEPROM reads config.txt and loads the kernel
	// and device tree itself: nothing.
	chainPi5 []string
)

// Models are the supported models: the device tree each one's firmware
// loads (the Raspberry Pi kernel's names, bcm27xx-rpi-*) and the
// config.txt sections that apply to it. The keyboards (400, 500) and
// Compute Modules are a Pi 4 or Pi 5 inside.
var Models = []boards.PiModel{
	{Name: "Raspberry Pi 3 Model B", DeviceTree: "bcm2710-rpi-3-b.dtb", Filters: []string{"pi3"}, Firmware: chainPi3},
	{Name: "Raspberry Pi 3 Model B Plus", DeviceTree: "bcm2710-rpi-3-b-plus.dtb", Filters: []string{"pi3", "pi3+"}, Firmware: chainPi3},
	{Name: "Raspberry Pi Zero 2 W", DeviceTree: "bcm2710-rpi-zero-2-w.dtb", Filters: []string{"pi02"}, Firmware: chainPi3},
	{Name: "Raspberry Pi 4 Model B", DeviceTree: "bcm2711-rpi-4-b.dtb", Filters: []string{"pi4"}, Firmware: chainPi4},
	{Name: "Raspberry Pi 400", DeviceTree: "bcm2711-rpi-400.dtb", Filters: []string{"pi4", "pi400"}, Firmware: chainPi4},
	{Name: "Raspberry Pi Compute Module 4", DeviceTree: "bcm2711-rpi-cm4.dtb", Filters: []string{"pi4", "cm4"}, Firmware: chainPi4},
	{Name: "Raspberry Pi 5 Model B", DeviceTree: "bcm2712-rpi-5-b.dtb", Filters: []string{"pi5"}, Firmware: chainPi5},
	// Pi 5 boards with the D0 stepping of the SoC.
	{Name: "Raspberry Pi 5 Model B (D0)", DeviceTree: "bcm2712d0-rpi-5-b.dtb", Filters: []string{"pi5"}, Firmware: chainPi5},
	{Name: "Raspberry Pi 500", DeviceTree: "bcm2712-rpi-500.dtb", Filters: []string{"pi5", "pi500"}, Firmware: chainPi5},
	// On the CM5 IO board, the firmware's default carrier.
	{Name: "Raspberry Pi Compute Module 5", DeviceTree: "bcm2712-rpi-cm5-cm5io.dtb", Filters: []string{"pi5", "cm5"}, Firmware: chainPi5},
	{Name: "Raspberry Pi Compute Module 5 Lite", DeviceTree: "bcm2712-rpi-cm5l-cm5io.dtb", Filters: []string{"pi5", "cm5"}, Firmware: chainPi5},
}

// Model returns the supported model named name.
func Model(name string) (boards.PiModel, bool) {
	for _, m := range Models {
		if m.Name == name {
			return m, true
		}
	}
	return boards.PiModel{}, false
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
//     would look for its own kernel8.img/kernel_2712.img. The image
//     builder puts os_prefix before these lines (image/bootslot), so the
//     firmware loads the selected slot's a/vmlinuz or b/vmlinuz.
//   - disable_splash=1: no rainbow screen, a few hundred ms faster.
//   - [cm4] otg_mode=1: the Compute Module 4's USB 2 port runs as a host
//     on the SoC's xHCI controller (as Raspberry Pi OS configures it);
//     without it the IO board's USB ports are dead.
const ConfigTxt = `# PC2 appliance (boards/rpi); read by the Raspberry Pi firmware.
[all]
arm_64bit=1
enable_uart=1
kernel=vmlinuz
disable_splash=1

[cm4]
otg_mode=1

[all]
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
	// One per entry of Models (Validate checks it).
	DeviceTrees: []string{
		"bcm2710-rpi-3-b.dtb", "bcm2710-rpi-3-b-plus.dtb", "bcm2710-rpi-zero-2-w.dtb",
		"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4.dtb",
		"bcm2712-rpi-5-b.dtb", "bcm2712d0-rpi-5-b.dtb", "bcm2712-rpi-500.dtb",
		"bcm2712-rpi-cm5-cm5io.dtb", "bcm2712-rpi-cm5l-cm5io.dtb",
	},
	PiModels:  Models,
	ConfigTxt: ConfigTxt,
	// Two 46 MB arm64 Images, and a third while an update writes one.
	BootSize: 256 << 20,
	Cmdline: []string{
		"ro", "init=/gokrazy/init", "rootwait", "panic=10", "oops=panic",
		"console=tty1", "console=serial0,115200",
	},
	Boot:               boards.BootRPiFirmware,
	MBR:                true,
	LinuxFirmware:      LinuxFirmware,
	LinuxFirmwareLinks: LinuxFirmwareLinks,
}
