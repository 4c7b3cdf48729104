// Package vm runs an appliance image under QEMU: for `make run`
// (`pc2 image run`) and for the QEMU test harness (qemu-tests/qemutest),
// so both boot images the same way.
//
// QEMU runs with TCG (-accel tcg,thread=multi) because KVM is not usable on
// the build machines (nested virtualisation). Guest ports are reached
// through user-mode networking's hostfwd on loopback; the guest reaches the
// host's loopback at 10.0.2.2. Per architecture (Options.GOARCH):
//
//   - amd64 (boards x86, qemu): qemu-system-x86_64 -machine q35 under OVMF
//     (UEFI), because the image boots through systemd-boot; with
//     Options.BIOS under QEMU's default firmware, SeaBIOS (legacy BIOS),
//     which boots the same image through SYSLINUX (see package image).
//   - arm64 (board qemuarm64): qemu-system-aarch64 -M virt -cpu cortex-a72
//     with direct kernel boot: Command reads config.txt from the image's
//     boot partition the Pi firmware's way (see ReadBootFile and
//     bootConfig), then the kernel it names and cmdline.txt from the slot
//     its os_prefix selects (a/vmlinuz and a/cmdline.txt, or b/ after an
//     A/B switch; package image/bootslot), and passes them as -kernel and
//     -append. cortex-a72 rather than max: max enables pointer
//     authentication, which TCG emulates slowly.
//   - arm64 on a Raspberry Pi model (Options.Machine raspi3b or raspi4b,
//     board rpi): the SD card image booted as the Pi firmware would, see
//     raspi.go.
package vm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pc2/pc2/image/bootslot"
)

// Binary is the QEMU system emulator for amd64 guests.
const Binary = "qemu-system-x86_64"

// BinaryArm64 is the QEMU system emulator for arm64 guests.
const BinaryArm64 = "qemu-system-aarch64"

// HostAddr is the host's loopback as the guest sees it.
const HostAddr = "10.0.2.2"

// OVMF firmware pairs (code, variables template), preferred first; from
// Debian's ovmf package.
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// ErrMissing is wrapped when QEMU or OVMF is not installed.
var ErrMissing = errors.New("vm: QEMU or OVMF missing")

// Options configure a VM; the zero value is usable.
type Options struct {
	// Forward maps guest TCP ports to host loopback ports (0: pick a free one).
	Forward map[int]int
	// MemoryMiB is the guest's memory; default 1024.
	MemoryMiB int
	// CPUs is the guest's CPU count; default 1 on amd64, 2 on arm64.
	// Under multi-threaded TCG an x86 SMP guest sometimes dies at boot with
	// an int3 oops in code the kernel is live-patching (static keys,
	// text_poke_bp) while another vCPU runs it; one vCPU avoids that race.
	CPUs int
	// Writable attaches the image read-write; otherwise writes go to a
	// temporary overlay (snapshot=on) and the image is never modified.
	Writable bool
	// StateDir holds the VM's copy of the OVMF variables or the kernel
	// read from the image (required).
	StateDir string
	// GOARCH is the guest's architecture, the board's GOARCH: "amd64"
	// (default) or "arm64".
	GOARCH string
	// BIOS boots an amd64 guest with SeaBIOS instead of OVMF; the image
	// must be of a board with BIOS boot (boards.Board.BIOSBootCode).
	BIOS bool
	// Tap adds a second network card on the host's tap interface of
	// that name, which must exist (ip tuntap add ... mode tap); the
	// guest names it eth1. Tests move the tap into a network namespace
	// once QEMU holds it, for traffic QEMU's user network cannot carry
	// (multicast). Not on the Raspberry Pi machines.
	Tap string
	// Machine selects one of QEMU's Raspberry Pi models (MachineRaspi3b,
	// MachineRaspi4b; see raspi.go) for an image of the rpi board;
	// empty: the board's virtual machine (q35 or virt).
	Machine string
}

// Firmware returns the OVMF code and variables template paths.
func Firmware() (code, vars string, err error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return "", "", fmt.Errorf("%w: %s not installed (apt-get install qemu-system-x86)", ErrMissing, Binary)
	}
	for _, p := range ovmfPairs {
		if fileExists(p[0]) && fileExists(p[1]) {
			return p[0], p[1], nil
		}
	}
	return "", "", fmt.Errorf("%w: OVMF firmware not found (apt-get install ovmf)", ErrMissing)
}

// CheckMachine is Check for a Raspberry Pi machine (Options.Machine).
func CheckMachine(machine string) error {
	if !IsRaspi(machine) {
		return fmt.Errorf("vm: no machine %q", machine)
	}
	_, _, err := arm64Binary(machine)
	return err
}

// Check reports whether QEMU (and firmware, where needed) for goarch is
// installed; "" means amd64.
func Check(goarch string) error {
	switch goarch {
	case "", "amd64":
		_, _, err := Firmware()
		return err
	case "arm64":
		if _, err := exec.LookPath(BinaryArm64); err != nil {
			return fmt.Errorf("%w: %s not installed (apt-get install qemu-system-arm)", ErrMissing, BinaryArm64)
		}
		return nil
	default:
		return fmt.Errorf("vm: no QEMU machine for GOARCH %q", goarch)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Command prepares QEMU for image. It resolves free host ports for
// Forward entries of 0 (the returned map has the real ones). QEMU cannot be
// handed a listener, so a port picked free may be taken before QEMU binds
// it; QEMU then fails to start with a clear message.
func Command(image string, opts Options) (*exec.Cmd, map[int]int, error) {
	if opts.BIOS {
		if opts.GOARCH != "" && opts.GOARCH != "amd64" {
			return nil, nil, fmt.Errorf("vm: BIOS boot is for amd64 guests, not %s", opts.GOARCH)
		}
		// SeaBIOS comes with qemu-system-x86 (Debian's seabios); no OVMF.
		if _, err := exec.LookPath(Binary); err != nil {
			return nil, nil, fmt.Errorf("%w: %s not installed (apt-get install qemu-system-x86)", ErrMissing, Binary)
		}
	} else if opts.Machine != "" {
		if !IsRaspi(opts.Machine) || opts.GOARCH != "arm64" {
			return nil, nil, fmt.Errorf("vm: no machine %q for GOARCH %q", opts.Machine, opts.GOARCH)
		}
	} else if err := Check(opts.GOARCH); err != nil {
		return nil, nil, err
	}
	if opts.StateDir == "" {
		return nil, nil, errors.New("vm: no state dir")
	}
	if opts.Machine != "" {
		if opts.Tap != "" {
			return nil, nil, fmt.Errorf("vm: no second network card on %s", opts.Machine)
		}
		netdev, ports, err := userNet(opts.Forward)
		if err != nil {
			return nil, nil, err
		}
		cmd, err := raspiCommand(image, opts, netdev)
		if err != nil {
			return nil, nil, err
		}
		return cmd, ports, nil
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 1024
	}
	if opts.CPUs == 0 {
		opts.CPUs = 1
		if opts.GOARCH == "arm64" {
			opts.CPUs = 2
		}
	}
	netdev, ports, err := userNet(opts.Forward)
	if err != nil {
		return nil, nil, err
	}
	snapshot := "snapshot=on,"
	if opts.Writable {
		snapshot = ""
	}
	common := []string{
		"-accel", "tcg,thread=multi",
		"-smp", fmt.Sprint(opts.CPUs),
		"-m", fmt.Sprint(opts.MemoryMiB),
		"-drive", "if=virtio,format=raw," + snapshot + "file=" + image,
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=net0",
		"-nographic",
		// A kernel panic (panic=10 reboots) or a reboot request ends QEMU
		// instead of looping.
		"-no-reboot",
	}
	if opts.Tap != "" {
		common = append(common, "-netdev", "tap,id=net1,ifname="+opts.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=net1")
	}
	if opts.GOARCH == "arm64" {
		kernel, cmdline, err := directBoot(image, opts.StateDir)
		if err != nil {
			return nil, nil, err
		}
		args := append([]string{
			"-machine", "virt",
			"-cpu", "cortex-a72",
			"-kernel", kernel,
			"-append", cmdline,
		}, common...)
		return exec.Command(BinaryArm64, args...), ports, nil
	}
	if opts.BIOS {
		// No -bios: QEMU's default firmware for q35 is SeaBIOS.
		args := append([]string{"-machine", "q35"}, common...)
		return exec.Command(Binary, args...), ports, nil
	}
	code, varsTemplate, err := Firmware()
	if err != nil {
		return nil, nil, err
	}
	// OVMF writes its variables; each guest gets its own copy.
	vars := filepath.Join(opts.StateDir, "OVMF_VARS.fd")
	b, err := os.ReadFile(varsTemplate)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		return nil, nil, err
	}
	args := append([]string{
		"-machine", "q35",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + vars,
	}, common...)
	return exec.Command(Binary, args...), ports, nil
}

// directBoot copies the kernel that config.txt names from the slot its
// os_prefix selects on image's boot partition to dir, and returns its
// path and the slot's command line (bootConfig). It reads the partition
// anew at each start, so a VM that the device switched to the other slot
// boots that slot next time, as a Pi would.
func directBoot(image, dir string) (kernel, cmdline string, err error) {
	f, err := os.Open(image)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	c, err := readBootConfig(f, nil)
	if err != nil {
		return "", "", fmt.Errorf("vm: %s: %w", image, err)
	}
	name := c.settings["kernel"]
	if name == "" {
		return "", "", fmt.Errorf("vm: %s: %s names no kernel (kernel=)", image, bootslot.ConfigTxt)
	}
	k, err := c.read(f, name)
	if err != nil {
		return "", "", fmt.Errorf("vm: %s: kernel: %w", image, err)
	}
	if cmdline, err = c.cmdline(f); err != nil {
		return "", "", fmt.Errorf("vm: %s: %w", image, err)
	}
	kernel = filepath.Join(dir, "kernel")
	if err := os.WriteFile(kernel, k, 0o644); err != nil {
		return "", "", err
	}
	return kernel, cmdline, nil
}

// userNet returns the -netdev value for user-mode networking with
// forwards, and the host ports chosen.
func userNet(forward map[int]int) (string, map[int]int, error) {
	ports := map[int]int{}
	netdev := "user,id=net0"
	for guest, host := range forward {
		if host == 0 {
			var err error
			if host, err = freePort(); err != nil {
				return "", nil, err
			}
		}
		ports[guest] = host
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", host, guest)
	}
	return netdev, ports, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
