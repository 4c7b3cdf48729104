package vm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// testDisk returns a disk with a FAT16 boot partition at 1 MiB holding
// files, behind a GPT or an MBR.
func testDisk(t *testing.T, gpt bool, files map[string][]byte) []byte {
	t.Helper()
	const start = 1 << 20
	fs := fat16.New(fat16.Options{Size: 64 << 20, Label: "TEST", HiddenSectors: start / 512, ModTime: time.Unix(1700000000, 0)})
	for name, data := range files {
		fs.Add(name, data)
	}
	boot, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	disk := make([]byte, start+len(boot))
	copy(disk[start:], boot)
	disk[510], disk[511] = 0x55, 0xaa
	if gpt {
		copy(disk[512:], "EFI PART")
		binary.LittleEndian.PutUint64(disk[512+72:], 2) // entries at LBA 2
		binary.LittleEndian.PutUint64(disk[1024+32:], start/512)
	} else {
		binary.LittleEndian.PutUint32(disk[446+8:], start/512)
	}
	return disk
}

func TestReadBootFile(t *testing.T) {
	kernel := bytes.Repeat([]byte("kernel image "), 100000) // several clusters
	cmdline := "root=PARTUUID=x/PARTNROFF=1 ro\n" + strings.Repeat(" ", 480)
	for _, gpt := range []bool{true, false} {
		disk := testDisk(t, gpt, map[string][]byte{
			"vmlinuz": kernel, "cmdline.txt": []byte(cmdline), "config.txt": []byte("x"),
			"bcm2710-rpi-3-b-plus.dtb": []byte("plus"), "bcm2710-rpi-3-b.dtb": []byte("3b"),
		})
		r := bytes.NewReader(disk)
		got, err := ReadBootFile(r, "vmlinuz")
		if err != nil || !bytes.Equal(got, kernel) {
			t.Errorf("gpt=%v: vmlinuz: %d bytes, %v; want %d bytes", gpt, len(got), err, len(kernel))
		}
		got, err = ReadBootFile(r, "cmdline.txt")
		if err != nil || string(got) != cmdline {
			t.Errorf("gpt=%v: cmdline.txt: got %q, %v; want %q", gpt, got, err, cmdline)
		}
		// Long names, whose 8.3 forms are lossy (BCM271~1.DTB).
		for name, want := range map[string]string{"bcm2710-rpi-3-b-plus.dtb": "plus", "bcm2710-rpi-3-b.dtb": "3b"} {
			if got, err := ReadBootFile(r, name); err != nil || string(got) != want {
				t.Errorf("gpt=%v: %s: got %q, %v; want %q", gpt, name, got, err, want)
			}
		}
		if _, err := ReadBootFile(r, "missing"); err == nil {
			t.Errorf("gpt=%v: missing file: got nil error", gpt)
		}
	}
}

// TestCommandArm64 checks the arm64 command line: -M virt, the kernel
// copied out of the image, and the command line from cmdline.txt.
func TestCommandArm64(t *testing.T) {
	if err := Check("arm64"); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	disk := testDisk(t, true, map[string][]byte{
		"vmlinuz": []byte("the kernel"), "cmdline.txt": []byte("root=PARTUUID=ab/PARTNROFF=1 ro\n    "),
	})
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, ports, err := Command(img, Options{GOARCH: "arm64", StateDir: dir, Forward: map[int]int{4200: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cmd.Path) != BinaryArm64 {
		t.Errorf("binary %s, want %s", cmd.Path, BinaryArm64)
	}
	args := cmd.Args[1:]
	arg := func(flag string) string {
		if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	if got := arg("-machine"); got != "virt" {
		t.Errorf("-machine %q, want virt", got)
	}
	if got := arg("-append"); got != "root=PARTUUID=ab/PARTNROFF=1 ro" {
		t.Errorf("-append %q, want cmdline.txt's first line", got)
	}
	if k, err := os.ReadFile(arg("-kernel")); err != nil || string(k) != "the kernel" {
		t.Errorf("-kernel %q: %q, %v", arg("-kernel"), k, err)
	}
	if ports[4200] == 0 || !strings.Contains(arg("-netdev"), "-:4200") {
		t.Errorf("forward: ports %v, netdev %q", ports, arg("-netdev"))
	}
	if slices.Contains(args, "if=pflash") {
		t.Error("arm64 direct boot uses no pflash firmware")
	}
}

// TestCommandBIOS checks the amd64 command line with BIOS: q35 under
// QEMU's default firmware (SeaBIOS), no OVMF flash, no copied variables.
func TestCommandBIOS(t *testing.T) {
	if _, err := exec.LookPath(Binary); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	cmd, _, err := Command(filepath.Join(dir, "disk.img"), Options{BIOS: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cmd.Path) != Binary {
		t.Errorf("binary %s, want %s", cmd.Path, Binary)
	}
	args := strings.Join(cmd.Args[1:], " ")
	if !strings.Contains(args, "-machine q35 ") {
		t.Errorf("args %q lack -machine q35", args)
	}
	for _, bad := range []string{"pflash", "-bios", "-kernel"} {
		if strings.Contains(args, bad) {
			t.Errorf("args %q contain %s; BIOS boot is SeaBIOS from the disk", args, bad)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("state dir holds %d files, want none (no OVMF variables)", len(entries))
	}
	if _, _, err := Command(filepath.Join(dir, "disk.img"), Options{BIOS: true, GOARCH: "arm64", StateDir: dir}); err == nil {
		t.Error("BIOS boot of an arm64 guest: got nil error")
	}
}

// TestFirmwareCmdline: the Pi firmware's edits of cmdline.txt that the
// harness makes for QEMU's raspi machines.
func TestFirmwareCmdline(t *testing.T) {
	line := "root=PARTUUID=2dcdfa95-02 ro console=tty1 console=serial0,115200"
	got := firmwareCmdline(line, map[string]string{"enable_uart": "1"})
	if want := "8250.nr_uarts=1 root=PARTUUID=2dcdfa95-02 ro console=tty1 console=ttyS0,115200"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := firmwareCmdline(line, nil); strings.Contains(got, "8250") {
		t.Errorf("without enable_uart: %q", got)
	}
}

// TestCommandRaspi: the raspi3b command line boots the image's own
// kernel and device tree from the SD card, grown to a power of two in an
// overlay (65 MiB: a 128 MiB card), with the watchdog workaround; the
// raspi4b refuses forwards
// (no network).
func TestCommandRaspi(t *testing.T) {
	if err := CheckMachine(MachineRaspi3b); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	kernel := make([]byte, 4096)
	disk := testDisk(t, false, map[string][]byte{
		"vmlinuz": kernel, "cmdline.txt": []byte("root=PARTUUID=x-02 console=serial0,115200\n   "),
		"config.txt": []byte("[all]\nenable_uart=1\nkernel=vmlinuz\n"), "bcm2710-rpi-3-b.dtb": []byte("dtb"),
	})
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, ports, err := Command(img, Options{GOARCH: "arm64", Machine: MachineRaspi3b, StateDir: dir, Forward: map[int]int{4200: 0}})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(cmd.Args, " ")
	for _, want := range []string{"-machine raspi3b", "-dtb " + filepath.Join(dir, "bcm2710-rpi-3-b.dtb"), NoWatchdog,
		"console=ttyS0,115200", "if=sd,format=qcow2", "usb-net", fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:4200", ports[4200])} {
		if !strings.Contains(args, want) {
			t.Errorf("command %q lacks %q", args, want)
		}
	}
	out, err := exec.Command("qemu-img", "info", filepath.Join(dir, "sd.qcow2")).Output()
	if err != nil || !strings.Contains(string(out), "virtual size: 128 MiB") {
		t.Errorf("SD overlay: %v\n%s", err, out)
	}
	if fi, _ := os.Stat(img); fi.Size() != int64(len(disk)) {
		t.Errorf("the image changed size")
	}
	if _, _, err := Command(img, Options{GOARCH: "arm64", Machine: MachineRaspi4b, StateDir: dir, Forward: map[int]int{4200: 0}}); err == nil ||
		!strings.Contains(err.Error(), "no network") {
		t.Errorf("raspi4b with forwards: %v", err)
	}
}
