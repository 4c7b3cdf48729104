// Package vm runs an appliance image under QEMU: for `make run`
// (`pc2 image run`) and for the QEMU test harness (qemu-tests/qemutest),
// so both boot images the same way.
//
// QEMU runs with TCG (-accel tcg,thread=multi) because KVM is not usable on
// the build machines (nested virtualisation), under OVMF (UEFI) because the
// image boots through systemd-boot. Guest ports are reached through
// user-mode networking's hostfwd on loopback; the guest reaches the host's
// loopback at 10.0.2.2.
package vm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Binary is the QEMU system emulator used.
const Binary = "qemu-system-x86_64"

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
	// CPUs is the guest's CPU count; default 2.
	CPUs int
	// Writable attaches the image read-write; otherwise writes go to a
	// temporary overlay (snapshot=on) and the image is never modified.
	Writable bool
	// StateDir holds the VM's copy of the OVMF variables (required).
	StateDir string
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

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Command prepares QEMU for image. It resolves free host ports for
// Forward entries of 0 (the returned map has the real ones). QEMU cannot be
// handed a listener, so a port picked free may be taken before QEMU binds
// it; QEMU then fails to start with a clear message.
func Command(image string, opts Options) (*exec.Cmd, map[int]int, error) {
	code, varsTemplate, err := Firmware()
	if err != nil {
		return nil, nil, err
	}
	if opts.StateDir == "" {
		return nil, nil, errors.New("vm: no state dir")
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 1024
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
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
	ports := map[int]int{}
	netdev := "user,id=net0"
	for guest, host := range opts.Forward {
		if host == 0 {
			if host, err = freePort(); err != nil {
				return nil, nil, err
			}
		}
		ports[guest] = host
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", host, guest)
	}
	snapshot := "snapshot=on,"
	if opts.Writable {
		snapshot = ""
	}
	args := []string{
		"-machine", "q35",
		"-accel", "tcg,thread=multi",
		"-smp", fmt.Sprint(opts.CPUs),
		"-m", fmt.Sprint(opts.MemoryMiB),
		"-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "if=virtio,format=raw," + snapshot + "file=" + image,
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=net0",
		"-nographic",
		// A kernel panic (panic=10 reboots) ends QEMU instead of looping.
		"-no-reboot",
	}
	return exec.Command(Binary, args...), ports, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
