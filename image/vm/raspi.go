package vm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Raspberry Pi machines: QEMU's models of real boards, which boot the rpi
// board's image (package boards/rpi) as built, from its SD card.
//
// QEMU has no model of the Pi's GPU, so the firmware stage (bootcode.bin,
// start*.elf) does not run; the harness does its part instead, from the
// image's own boot partition and nothing else: it reads config.txt for the
// kernel's file name and os_prefix, the slot directory of package
// image/bootslot's A/B layout; takes that kernel and the model's device
// tree from the slot, and passes the slot's cmdline.txt with the two
// edits the firmware makes to it (see firmwareCmdline). Unlike the
// firmware it does not fall back to the root when the slot lacks a file
// (see bootConfig). The rest of the boot is the board's: the kernel finds
// the SD card, mounts root by PARTUUID and starts gokrazy's init.
//
// Three additions to the command line are the harness's, never the
// image's: an early console (see raspi.earlycon), NoVCHIQ (below), and
// initcall_blacklist=bcm2835_wdt_driver_init (NoWatchdog). gokrazy's
// init arms the hardware watchdog at start. On a real Pi the BCM2835's
// power-management block then counts the watchdog down and resets the
// board only if nobody pets it. QEMU's model of that block
// (hw/misc/bcm2835_powermgt.c, 7.2 and 10.0 alike) ignores the countdown
// register and resets the machine as soon as the kernel writes the
// full-reset configuration to RSTC, which bcm2835_wdt_start does when the
// watchdog is opened: the guest reboots about a second after the init
// starts, forever. Without the driver there is no /dev/watchdog; gokrazy
// logs "disabling hardware watchdog" and goes on, which the QEMU tests
// check for so that the workaround cannot hide another reset.
const (
	MachineRaspi3b = "raspi3b"
	MachineRaspi4b = "raspi4b"
)

// NoWatchdog is the harness-only kernel parameter described above.
const NoWatchdog = "initcall_blacklist=bcm2835_wdt_driver_init"

// NoVCHIQ keeps the kernel's VCHIQ driver (the ARM side of the
// VideoCore's services: camera, codecs, audio) from starting, in the
// harness only. QEMU models no VideoCore, so the driver's probe always
// fails ("failed to set channelbase", "Could not initialize vchiq
// platform"), and in kernel 6.12.47 its slot handler thread, already
// started, can then touch the memory that the failed probe freed: an
// oops in slot_handler_func and a kernel panic about 4 s into the
// boot. It is a race: one boot in 8 under load here, and once in CI,
// where the console stayed empty until the early console showed it.
// A real Pi's firmware answers the probe, and a node uses none of those
// services.
const NoVCHIQ = "initcall_blacklist=vchiq_driver_init"

// raspi describes one QEMU Raspberry Pi machine.
type raspi struct {
	// dtb is the device tree the Pi firmware loads for the model.
	dtb string
	// filters are the model's config.txt sections ([pi3], [pi4]).
	filters []string
	// net: QEMU emulates a USB host controller (dwc2) that takes its
	// usb-net device. The raspi4b has neither its Ethernet (GENET) nor
	// its PCIe xHCI USB emulated, so it has no network at all.
	net bool
	// earlycon is the harness's early console on the model's mini UART
	// (the serial console the test reads): the kernel prints from its
	// first line there, where the Pi's own console starts only when the
	// 8250 driver comes up, late in the boot. A guest that stops before
	// that (a boot seen once in CI under load printed nothing in five
	// minutes) then shows how far it got.
	earlycon string
}

var raspis = map[string]raspi{
	MachineRaspi3b: {dtb: "bcm2710-rpi-3-b.dtb", filters: []string{"pi3"}, net: true, earlycon: "earlycon=uart8250,mmio32,0x3f215040"},
	MachineRaspi4b: {dtb: "bcm2711-rpi-4-b.dtb", filters: []string{"pi4"}, earlycon: "earlycon=uart8250,mmio32,0xfe215040"},
}

// IsRaspi reports whether machine is one of QEMU's Raspberry Pi models.
func IsRaspi(machine string) bool {
	_, ok := raspis[machine]
	return ok
}

// BackportsQEMU is where scripts/deps.sh unpacks QEMU for arm from
// Debian's bookworm-backports (QEMU 10): its raspi4b machine is newer
// than bookworm's QEMU 7.2. It is unpacked beside the system's QEMU, not
// installed over it, so the other tests keep the QEMU they were measured
// with.
const BackportsQEMU = "/var/cache/pc2/qemu-backports"

// arm64Binary returns the qemu-system-aarch64 that has machine and the
// arguments it needs to find its own data files.
func arm64Binary(machine string) (string, []string, error) {
	bins := []struct {
		path string
		args []string
	}{
		{BinaryArm64, nil},
		// -L: its firmware and keymaps, not the system QEMU's.
		{filepath.Join(BackportsQEMU, "usr/bin", BinaryArm64), []string{"-L", filepath.Join(BackportsQEMU, "usr/share/qemu")}},
	}
	for _, b := range bins {
		p, err := exec.LookPath(b.path)
		if err != nil {
			continue
		}
		if hasMachine(p, machine) {
			return p, b.args, nil
		}
	}
	return "", nil, fmt.Errorf("%w: no %s with machine %q (the system's QEMU, or Debian bookworm-backports' in %s from scripts/deps.sh)",
		ErrMissing, BinaryArm64, machine, BackportsQEMU)
}

var machineLists sync.Map // binary path -> output of -machine help

// hasMachine reports whether the QEMU binary at path models machine.
func hasMachine(path, machine string) bool {
	out, ok := machineLists.Load(path)
	if !ok {
		b, err := exec.Command(path, "-machine", "help").Output()
		if err != nil {
			return false
		}
		out, _ = machineLists.LoadOrStore(path, string(b))
	}
	for _, line := range strings.Split(out.(string), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == machine {
			return true
		}
	}
	return false
}

// raspiCommand is Command for a Raspberry Pi machine.
func raspiCommand(image string, opts Options, netdev string) (*exec.Cmd, error) {
	m := raspis[opts.Machine]
	if len(opts.Forward) > 0 && !m.net {
		return nil, fmt.Errorf("vm: QEMU's %s has no network device (its Ethernet and PCIe USB are not emulated); no ports to forward", opts.Machine)
	}
	bin, args, err := arm64Binary(opts.Machine)
	if err != nil {
		return nil, err
	}
	boot, err := readRaspiBoot(image, m)
	if err != nil {
		return nil, err
	}
	kernel := filepath.Join(opts.StateDir, "kernel")
	dtb := filepath.Join(opts.StateDir, m.dtb)
	if err := os.WriteFile(kernel, boot.kernel, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dtb, boot.dtb, 0o644); err != nil {
		return nil, err
	}
	drive, err := sdCard(image, opts)
	if err != nil {
		return nil, err
	}
	args = append(args,
		"-machine", opts.Machine,
		"-accel", "tcg,thread=multi",
		"-kernel", kernel,
		"-dtb", dtb,
		"-append", strings.Join([]string{boot.cmdline, NoWatchdog, NoVCHIQ, m.earlycon}, " "),
		"-drive", drive,
		// The Pi's serial0 is the mini UART (ttyS0, see firmwareCmdline),
		// QEMU's second serial port; the first is the PL011 that the
		// Pi's Bluetooth uses.
		"-display", "none", "-monitor", "none", "-serial", "null", "-serial", "stdio",
		// No sound: QEMU's default audio back end would be a module, and
		// QEMU 10 would load the system QEMU's (7.2), which does not fit.
		"-audiodev", "none,id=snd0",
		"-no-reboot",
	)
	if opts.MemoryMiB != 0 {
		// The models fix their memory to the board's (1 GiB, 2 GiB);
		// QEMU refuses other sizes.
		args = append(args, "-m", fmt.Sprint(opts.MemoryMiB))
	}
	if m.net {
		args = append(args, "-device", "usb-net,netdev=net0", "-netdev", netdev)
	}
	return exec.Command(bin, args...), nil
}

// raspiBoot is what the Pi firmware would load from the boot partition.
type raspiBoot struct {
	kernel, dtb []byte
	cmdline     string
}

// readRaspiBoot reads what the firmware of model m loads: config.txt
// with m's sections, then os_prefix + the kernel, os_prefix + the
// device tree and os_prefix + cmdline.txt.
func readRaspiBoot(image string, m raspi) (raspiBoot, error) {
	f, err := os.Open(image)
	if err != nil {
		return raspiBoot{}, err
	}
	defer f.Close()
	fail := func(what string, err error) (raspiBoot, error) {
		return raspiBoot{}, fmt.Errorf("vm: %s: %s%w", image, what, err)
	}
	c, err := readBootConfig(f, m.filters)
	if err != nil {
		return fail("", err)
	}
	name := c.settings["kernel"]
	if name == "" {
		// The firmware's default for a 64-bit Pi 3 or 4.
		name = "kernel8.img"
	}
	var b raspiBoot
	if b.kernel, err = c.read(f, name); err != nil {
		return fail("kernel: ", err)
	}
	if b.dtb, err = c.read(f, m.dtb); err != nil {
		return fail("device tree: ", err)
	}
	line, err := c.cmdline(f)
	if err != nil {
		return fail("", err)
	}
	b.cmdline = firmwareCmdline(line, c.settings)
	return b, nil
}

// firmwareCmdline makes the Pi firmware's edits to cmdline.txt that the
// kernel depends on: console=serial0 names the firmware's alias of the
// GPIO UART, which the firmware replaces with the kernel's device (on
// the Pi 3 and 4, whose PL011 drives Bluetooth, the mini UART ttyS0);
// and enable_uart=1 makes it add 8250.nr_uarts=1, without which the
// kernel registers no 8250 (mini UART) port.
func firmwareCmdline(cmdline string, cfg map[string]string) string {
	var out []string
	for _, p := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(p, "console=serial0"); ok {
			p = "console=ttyS0" + v
		}
		out = append(out, p)
	}
	if cfg["enable_uart"] == "1" {
		out = append([]string{"8250.nr_uarts=1"}, out...)
	}
	return strings.Join(out, " ")
}

// sdCard returns the -drive value for the SD card. QEMU's SD card model
// takes only sizes that are a power of two, as real cards roughly are;
// image.Build's disks are not. The image is put on the next card size up,
// which is what writing it to a real card does: the space behind the
// image is the card's, and the appliance grows perm into it. Writable
// grows the image file itself (sparsely); otherwise a qcow2 overlay of
// that size in StateDir takes the writes and the image stays untouched.
func sdCard(image string, opts Options) (string, error) {
	st, err := os.Stat(image)
	if err != nil {
		return "", err
	}
	size := int64(1)
	for size < st.Size() {
		size <<= 1
	}
	if opts.Writable {
		if size != st.Size() {
			if err := os.Truncate(image, size); err != nil {
				return "", fmt.Errorf("vm: grow %s to an SD card size: %w", image, err)
			}
		}
		return "if=sd,format=raw,file=" + image, nil
	}
	abs, err := filepath.Abs(image)
	if err != nil {
		return "", err
	}
	overlay := filepath.Join(opts.StateDir, "sd.qcow2")
	_ = os.Remove(overlay)
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", "raw", overlay, strconv.FormatInt(size, 10)).CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("%w: qemu-img not installed (apt-get install qemu-utils)", ErrMissing)
		}
		return "", fmt.Errorf("vm: qemu-img create: %v: %s", err, out)
	}
	return "if=sd,format=qcow2,file=" + overlay, nil
}
