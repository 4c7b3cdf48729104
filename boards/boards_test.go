package boards_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/boards/x86"
)

// all lists every board; add new boards here so TestBoardConfigs covers them.
var all = []boards.Board{x86.Board, qemu.Board, qemuarm64.Board, rpi.Board}

func TestBoardConfigs(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range all {
		t.Run(b.Name, func(t *testing.T) {
			if err := b.Validate(); err != nil {
				t.Fatal(err)
			}
			if seen[b.Name] {
				t.Fatalf("duplicate board name %q", b.Name)
			}
			seen[b.Name] = true
			if _, err := os.Stat(b.Name); err != nil {
				t.Errorf("board %q has no folder boards/%s: %v", b.Name, b.Name, err)
			}
			// The kernel module must be in go.mod and ship the image.
			out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", b.KernelModule).Output()
			if err != nil {
				t.Fatalf("go list -m %s: %v", b.KernelModule, err)
			}
			dir := strings.TrimSpace(string(out))
			checkKernelArch(t, filepath.Join(dir, b.KernelImage), b.GOARCH)
			for _, dt := range b.DeviceTrees {
				if _, err := os.Stat(filepath.Join(dir, dt)); err != nil {
					t.Errorf("device tree: %v", err)
				}
			}
			if b.FirmwareModule != "" {
				out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", b.FirmwareModule).Output()
				if err != nil {
					t.Fatalf("go list -m %s: %v", b.FirmwareModule, err)
				}
				for _, f := range b.FirmwareFiles {
					if _, err := os.Stat(filepath.Join(strings.TrimSpace(string(out)), f)); err != nil {
						t.Errorf("firmware: %v", err)
					}
				}
			}
		})
	}
}

// checkKernelArch checks that the kernel image is one the board's CPU
// boots: the boot protocol headers of x86 (bzImage) and arm64 (Image).
func checkKernelArch(t *testing.T, path, goarch string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("kernel image: %v", err)
	}
	defer f.Close()
	magic := map[string]struct {
		off  int64
		want string
	}{
		"amd64": {0x202, "HdrS"}, // Documentation/arch/x86/boot.rst
		"arm64": {56, "ARM\x64"}, // Documentation/arch/arm64/booting.rst
	}[goarch]
	if magic.want == "" {
		t.Fatalf("no kernel header check for GOARCH %s", goarch)
	}
	got := make([]byte, 4)
	if _, err := f.ReadAt(got, magic.off); err != nil {
		t.Fatalf("kernel image: %v", err)
	}
	if string(got) != magic.want {
		t.Errorf("kernel %s: magic %q at %#x, want %q (a %s kernel)", path, got, magic.off, magic.want, goarch)
	}
}

func TestQEMUConsoleIsSerial(t *testing.T) {
	if !qemu.Board.HasParam("console=ttyS0,115200") {
		t.Errorf("qemu cmdline %q lacks console=ttyS0,115200", qemu.Board.Cmdline)
	}
	// -M virt's UART is a PL011.
	if !qemuarm64.Board.HasParam("console=ttyAMA0,115200") {
		t.Errorf("qemuarm64 cmdline %q lacks console=ttyAMA0,115200", qemuarm64.Board.Cmdline)
	}
}

// TestRPiModels: every supported model's device tree is on the boot
// partition, the firmware for each generation is there, and the serial
// console is on.
func TestRPiModels(t *testing.T) {
	for model, dt := range rpi.Models {
		if !slices.Contains(rpi.Board.DeviceTrees, dt) {
			t.Errorf("%s: device tree %s not in the board's DeviceTrees", model, dt)
		}
	}
	for _, want := range []string{
		"bootcode.bin", "start.elf", "fixup.dat", // Pi 3 family, Zero 2 W
		"start4.elf", "fixup4.dat", // Pi 4
	} {
		if !slices.Contains(rpi.Board.FirmwareFiles, want) {
			t.Errorf("firmware lacks %s", want)
		}
	}
	if !strings.Contains(rpi.ConfigTxt, "\nenable_uart=1\n") || !rpi.Board.HasParam("console=serial0,115200") {
		t.Errorf("serial console not enabled: config.txt %q, cmdline %q", rpi.ConfigTxt, rpi.Board.Cmdline)
	}
}

func TestValidateRejects(t *testing.T) {
	for name, mutate := range map[string]func(*boards.Board){
		"rootdelay":  func(b *boards.Board) { b.Cmdline = append(b.Cmdline, "rootdelay=10") },
		"root":       func(b *boards.Board) { b.Cmdline = append(b.Cmdline, "root=/dev/sda2") },
		"no kernel":  func(b *boards.Board) { b.KernelImage = "" },
		"efi path":   func(b *boards.Board) { b.EFIRemovablePath = "EFI/BOOT/BOOTAA64.EFI" },
		"method":     func(b *boards.Board) { b.Boot = "floppy" },
		"direct+efi": func(b *boards.Board) { b.Boot = boards.BootDirectKernel },
		"rpi no fw":  func(b *boards.Board) { *b = rpi.Board; b.FirmwareFiles = nil },
		"rpi gpt":    func(b *boards.Board) { *b = rpi.Board; b.MBR = false },
		"rpi 32-bit": func(b *boards.Board) { *b = rpi.Board; b.ConfigTxt = "kernel=vmlinuz\n" },
		"bios mbr":   func(b *boards.Board) { b.MBR = true },
		"bios arm64": func(b *boards.Board) { *b = qemuarm64.Board; b.BIOSBootCode = x86.Board.BIOSBootCode },
	} {
		b := x86.Board
		b.Cmdline = append([]string(nil), b.Cmdline...)
		mutate(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want error", name)
		}
	}
}
