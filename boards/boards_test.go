package boards_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/x86"
)

// all lists every board; add new boards here so TestBoardConfigs covers them.
var all = []boards.Board{x86.Board, qemu.Board}

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
			if _, err := os.Stat(filepath.Join(dir, b.KernelImage)); err != nil {
				t.Errorf("kernel image: %v", err)
			}
		})
	}
}

func TestQEMUConsoleIsSerial(t *testing.T) {
	if !qemu.Board.HasParam("console=ttyS0,115200") {
		t.Errorf("qemu cmdline %q lacks console=ttyS0,115200", qemu.Board.Cmdline)
	}
}

func TestValidateRejects(t *testing.T) {
	for name, mutate := range map[string]func(*boards.Board){
		"rootdelay": func(b *boards.Board) { b.Cmdline = append(b.Cmdline, "rootdelay=10") },
		"root":      func(b *boards.Board) { b.Cmdline = append(b.Cmdline, "root=/dev/sda2") },
		"no kernel": func(b *boards.Board) { b.KernelImage = "" },
		"efi path":  func(b *boards.Board) { b.EFIRemovablePath = "EFI/BOOT/BOOTAA64.EFI" },
		"method":    func(b *boards.Board) { b.Boot = "floppy" },
	} {
		b := x86.Board
		b.Cmdline = append([]string(nil), b.Cmdline...)
		mutate(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want error", name)
		}
	}
}
