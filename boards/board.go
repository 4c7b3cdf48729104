// Package boards describes the hardware the appliance image runs on: one
// folder per board (x86, qemu, qemuarm64, rpi) holds that board's kernel and
// firmware choice and its boot configuration as a Board value.
//
// Boards are plain data so that the image builder (package image) has no
// per-board branches and a single test (boards_test.go) can check that
// every board is complete and consistent.
//
// Kernel command line choices shared by all boards:
//
//   - root= is not part of Board.Cmdline: the image builder adds it because
//     it depends on the disk's GUIDs (see package image).
//   - rootwait instead of the kernel.amd64 module's rootdelay=10: rootdelay
//     sleeps unconditionally, rootwait only until the root device appears.
//   - init=/gokrazy/init, ro, panic=10, oops=panic: gokrazy's init is PID 1,
//     the root is a read-only squashfs, and a kernel panic reboots the box
//     (on an appliance, rebooting beats hanging).
package boards

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// BootMethod is how the firmware finds and starts the kernel.
type BootMethod string

const (
	// BootUEFISystemdBoot: the firmware loads systemd-boot from the removable
	// media path EFI/BOOT/BOOTX64.EFI (so no NVRAM boot entry is needed) and
	// systemd-boot starts the kernel's EFI stub with the command line from
	// loader/entries/gokrazy.conf, which names the selected slot's kernel
	// and its command line (image/bootslot); an A/B switch rewrites it.
	BootUEFISystemdBoot BootMethod = "uefi-systemd-boot"

	// BootDirectKernel: the boot partition holds the two slots' kernels
	// and cmdline.txt (image/bootslot) and a config.txt that selects one
	// by os_prefix, and something outside the disk loads them: QEMU's
	// -kernel and -append, which image/vm reads from the partition the
	// Pi firmware's way at every start, so an A/B switch of config.txt
	// boots the other slot next time, as on the other boards.
	BootDirectKernel BootMethod = "direct-kernel"

	// BootRPiFirmware: the Raspberry Pi's GPU firmware (bootcode.bin and
	// start*.elf on the Pi 3 family, start4.elf on the Pi 4, the EEPROM
	// on the Pi 5) reads config.txt, then the device tree for the model,
	// the kernel and cmdline.txt from the slot directory its os_prefix
	// names (image/bootslot); an A/B switch rewrites that one line.
	BootRPiFirmware BootMethod = "rpi-firmware"
)

// Board is one target's kernel, firmware and boot configuration.
type Board struct {
	// Name is the board's short name, equal to its folder under boards/.
	Name string
	// GOARCH of every binary in the image.
	GOARCH string
	// KernelModule is the Go module holding the kernel image (and
	// lib/modules, if any), e.g. github.com/gokrazy/kernel.amd64. The board
	// package blank-imports it so that go.mod keeps requiring it.
	KernelModule string
	// KernelImage is the kernel's path inside KernelModule.
	KernelImage string
	// FirmwareModule is the Go module with boot firmware copied to the boot
	// partition (Raspberry Pi); empty when the board has none.
	FirmwareModule string
	// Cmdline holds the kernel parameters except root=.
	Cmdline []string
	// Boot is how the board boots.
	Boot BootMethod
	// EFIBootloader is the host path of the UEFI boot loader placed at
	// EFIRemovablePath on the boot partition (Debian package
	// systemd-boot-efi).
	EFIBootloader string
	// EFIRemovablePath is where UEFI firmware looks for a boot loader on
	// removable media, for this architecture.
	EFIRemovablePath string
	// BIOSBootCode, on an amd64 GPT board that boots by UEFI, makes the
	// same disk boot under a legacy BIOS too: it is the host path of the
	// GPT-aware MBR boot code (syslinux's gptmbr.bin, Debian package
	// syslinux), which the image builder writes into the protective MBR;
	// it marks the boot partition "legacy BIOS bootable" and installs
	// SYSLINUX there with a syslinux.cfg. Empty: UEFI only.
	BIOSBootCode string
	// MBR selects an MBR (DOS) partition table instead of GPT; the Pi 3
	// family's boot ROM reads only MBR. root= then takes the MBR form
	// PARTUUID=<disk signature>-02.
	MBR bool
	// FirmwareFiles are copied from FirmwareModule to the boot
	// partition's root.
	FirmwareFiles []string
	// DeviceTrees are copied from KernelModule to the boot partition's
	// root, where the Pi firmware looks for the model's .dtb.
	DeviceTrees []string
	// PiModels are the Raspberry Pi models the board supports; the image
	// builder checks the boot partition against each (CheckBootFiles).
	PiModels []PiModel
	// BootSize is the boot partition's size when the image options give
	// none (0: image.DefaultBootSize). It holds two kernels (the A/B
	// slots of image/bootslot) and room for a third while an update
	// writes one.
	BootSize int64
	// ConfigTxt is the boot partition's config.txt (Pi firmware).
	ConfigTxt string
	// LinuxFirmware lists the files that the kernel's drivers load from
	// /lib/firmware and the root file system ships, as paths relative to
	// /lib/firmware (e.g. "brcm/brcmfmac43455-sdio.bin"). They come from
	// the pinned Debian package that package image names
	// (image.LinuxFirmwarePackage, fetched by scripts/deps.sh); a path that
	// is a symbolic link in the package is shipped as a regular file with
	// the bytes of the file it points to.
	LinuxFirmware []string
	// LinuxFirmwareLinks adds symbolic links under /lib/firmware for names
	// a driver requests that the package lacks: link path (relative to
	// /lib/firmware) -> target (relative to the link's directory, as in
	// linux-firmware). Every target must be in LinuxFirmware.
	LinuxFirmwareLinks map[string]string
}

// PiModel is one Raspberry Pi model of a BootRPiFirmware board.
type PiModel struct {
	// Name is the model as its device tree names it, e.g.
	// "Raspberry Pi 4 Model B".
	Name string
	// DeviceTree is the .dtb its firmware loads from the boot partition.
	DeviceTree string
	// Filters are the config.txt conditional sections that apply to it
	// besides [all], e.g. "pi4" and "cm4" for a Compute Module 4.
	Filters []string
	// Firmware is what its boot chain reads from the boot partition
	// before the kernel: bootcode.bin, start.elf and fixup.dat on the
	// Pi 3 family, start4.elf and fixup4.dat on the Pi 4 family; none on
	// the Pi 5 family, whose EEPROM reads config.txt and the kernel
	// itself.
	Firmware []string
}

// ErrBootFiles is wrapped by CheckBootFiles's errors.
var ErrBootFiles = errors.New("boards: boot partition incomplete")

// CheckBootFiles checks that files (the boot partition: absolute paths,
// as the image builder assembles it, in the A/B layout of package
// image/bootslot) hold everything each of the board's Pi models needs to
// boot: its boot chain's firmware at the root; config.txt settings that
// start it in 64-bit mode (the Pi 5 family always runs 64-bit), select a
// slot directory with os_prefix (a/ or b/; without one the partition is
// not the A/B layout) and name a kernel; and in the selected slot, as
// the firmware prefixes them, that kernel, an arm64 Image, and the
// model's device tree. The other slot must have the same two files, so
// that an update has their places to write; the image builder leaves
// them empty (the other slot's root partition is empty too, and the
// updater never selects a slot that does not hold its release's files).
// Boards that do not boot by the Pi firmware have nothing to check.
func (b Board) CheckBootFiles(files map[string][]byte) error {
	if b.Boot != BootRPiFirmware {
		return nil
	}
	if len(b.PiModels) == 0 {
		return fmt.Errorf("%w: %s lists no Pi models", ErrBootFiles, b.Name)
	}
	config, ok := files["/config.txt"]
	if !ok {
		return fmt.Errorf("%w: no config.txt", ErrBootFiles)
	}
	// The slot directories of image/bootslot, each with the other one;
	// spelled out here so that boards stays free of the image packages.
	otherSlot := map[string]string{"a/": "b/", "b/": "a/"}
	for _, m := range b.PiModels {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s: %s", ErrBootFiles, m.Name, fmt.Sprintf(format, args...))
		}
		// The firmware's own files are never prefixed.
		for _, f := range m.Firmware {
			if len(files["/"+f]) == 0 {
				return fail("no %s", f)
			}
		}
		cfg := ParseConfigTxt(string(config), m.Filters)
		if len(m.Firmware) > 0 && cfg["arm_64bit"] != "1" {
			return fail("config.txt does not set arm_64bit=1 for it; its firmware would start the kernel in 32-bit mode")
		}
		slot := cfg["os_prefix"]
		other, ok := otherSlot[slot]
		switch {
		case slot == "":
			return fail("config.txt sets no os_prefix for it: not an A/B boot partition (want os_prefix=a/ or b/)")
		case !ok:
			return fail("config.txt sets os_prefix=%s for it, not a slot directory (a/ or b/)", slot)
		}
		kernel := cfg["kernel"]
		if kernel == "" {
			return fail("config.txt names no kernel for it")
		}
		if len(files["/"+slot+m.DeviceTree]) == 0 {
			return fail("no %s%s (the selected slot)", slot, m.DeviceTree)
		}
		k := files["/"+slot+kernel]
		// The arm64 Image header's magic, "ARM\x64", is at offset 56.
		if len(k) < 64 || string(k[56:60]) != "ARM\x64" {
			return fail("kernel %s%s (config.txt, the selected slot) is missing or not an arm64 Image", slot, kernel)
		}
		for _, f := range []string{m.DeviceTree, kernel} {
			if _, ok := files["/"+other+f]; !ok {
				return fail("no %s%s: the other slot has no place for an update's %s", other, f, f)
			}
		}
	}
	return nil
}

// ParseConfigTxt returns the settings of a Pi's config.txt that apply to
// a model whose conditional sections are filters (PiModel.Filters):
// lines before any section, and in [all] and the model's sections; later
// lines win. Other sections ([pi02], [tryboot], [none], ...) are skipped;
// so are the firmware's other filter kinds (EDID, serial number, GPIO),
// which the files of this project never use.
func ParseConfigTxt(config string, filters []string) map[string]string {
	cfg := map[string]string{}
	applies := true
	for _, line := range strings.Split(config, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			s := strings.Trim(line, "[]")
			applies = s == "all"
			for _, f := range filters {
				applies = applies || s == f
			}
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && applies {
			cfg[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cfg
}

// ErrIncomplete is wrapped by Validate's errors.
var ErrIncomplete = errors.New("boards: incomplete board")

var archEFI = map[string]string{
	"amd64": "EFI/BOOT/BOOTX64.EFI",
	"arm64": "EFI/BOOT/BOOTAA64.EFI",
}

// Validate reports the first problem that would make an image of b
// unbootable or slow to boot, or ship firmware files that cannot be found.
func (b Board) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrIncomplete, b.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case b.Name == "":
		return fail("no name")
	case b.GOARCH == "":
		return fail("no GOARCH")
	case b.KernelModule == "" || b.KernelImage == "":
		return fail("no kernel")
	}
	for _, want := range []string{"init=/gokrazy/init", "rootwait", "ro"} {
		if !b.HasParam(want) {
			return fail("cmdline lacks %s", want)
		}
	}
	for _, p := range b.Cmdline {
		if strings.HasPrefix(p, "root=") {
			return fail("cmdline sets %s; the image builder adds root=", p)
		}
		if strings.HasPrefix(p, "rootdelay=") {
			return fail("cmdline sets %s; use rootwait", p)
		}
	}
	if b.BIOSBootCode != "" {
		// gptmbr.bin reads the GPT and starts SYSLINUX, an x86 loader that
		// sits beside systemd-boot on the EFI system partition.
		switch {
		case b.GOARCH != "amd64":
			return fail("BIOS boot on %s; it is for amd64", b.GOARCH)
		case b.MBR:
			return fail("BIOS boot code is GPT-aware; the board uses MBR")
		case b.Boot != BootUEFISystemdBoot:
			return fail("BIOS boot is an addition to %s, not to %s", BootUEFISystemdBoot, b.Boot)
		}
	}
	if err := b.validateLinuxFirmware(); err != nil {
		return fail("%v", err)
	}
	switch b.Boot {
	case BootUEFISystemdBoot:
		if b.EFIBootloader == "" {
			return fail("no EFI boot loader")
		}
		if want := archEFI[b.GOARCH]; b.EFIRemovablePath != want {
			return fail("EFI path %q, want %q for %s", b.EFIRemovablePath, want, b.GOARCH)
		}
	case BootDirectKernel:
		if b.EFIBootloader != "" || b.EFIRemovablePath != "" {
			return fail("direct kernel boot takes no EFI boot loader")
		}
	case BootRPiFirmware:
		switch {
		case b.FirmwareModule == "" || len(b.FirmwareFiles) == 0:
			return fail("no Pi firmware")
		case len(b.DeviceTrees) == 0:
			return fail("no device trees")
		case !b.MBR:
			return fail("the Pi 3 family boots only from an MBR disk")
		case len(b.PiModels) == 0:
			return fail("no Pi models")
		}
		for _, m := range b.PiModels {
			if !slices.Contains(b.DeviceTrees, m.DeviceTree) {
				return fail("%s: device tree %s is not in DeviceTrees", m.Name, m.DeviceTree)
			}
			for _, f := range m.Firmware {
				if !slices.Contains(b.FirmwareFiles, f) {
					return fail("%s: firmware %s is not in FirmwareFiles", m.Name, f)
				}
			}
		}
		for _, want := range []string{"arm_64bit=1", "kernel=" + b.KernelImage} {
			if !strings.Contains("\n"+b.ConfigTxt+"\n", "\n"+want+"\n") {
				return fail("config.txt lacks %s", want)
			}
		}
	default:
		return fail("unknown boot method %q", b.Boot)
	}
	return nil
}

// validateLinuxFirmware checks that every firmware path stays inside
// /lib/firmware, is listed once, and that every link points to a shipped
// file (a dangling link would make the driver fail as if nothing were
// there).
func (b Board) validateLinuxFirmware() error {
	valid := func(p string) error {
		if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("firmware path %q is not a clean path inside /lib/firmware", p)
		}
		return nil
	}
	files := map[string]bool{}
	for _, p := range b.LinuxFirmware {
		if err := valid(p); err != nil {
			return err
		}
		if files[p] {
			return fmt.Errorf("firmware %s listed twice", p)
		}
		files[p] = true
	}
	for link, target := range b.LinuxFirmwareLinks {
		if err := valid(link); err != nil {
			return err
		}
		if files[link] {
			return fmt.Errorf("firmware %s is both a file and a link", link)
		}
		if target == "" || path.IsAbs(target) {
			return fmt.Errorf("firmware link %s -> %q: want a relative target", link, target)
		}
		if to := path.Join(path.Dir(link), target); !files[to] {
			return fmt.Errorf("firmware link %s -> %s: %s is not in LinuxFirmware", link, target, to)
		}
	}
	return nil
}

// HasParam reports whether the command line contains param verbatim.
func (b Board) HasParam(param string) bool {
	for _, p := range b.Cmdline {
		if p == param {
			return true
		}
	}
	return false
}
