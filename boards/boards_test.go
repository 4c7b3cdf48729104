package boards_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
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
	for _, m := range rpi.Models {
		if !slices.Contains(rpi.Board.DeviceTrees, m.DeviceTree) {
			t.Errorf("%s: device tree %s not in the board's DeviceTrees", m.Name, m.DeviceTree)
		}
	}
	// The list of models: each has its device tree.
	for _, name := range []string{"Raspberry Pi 400", "Raspberry Pi 500", "Raspberry Pi Compute Module 4", "Raspberry Pi Compute Module 5"} {
		if _, ok := rpi.Model(name); !ok {
			t.Errorf("%s is not supported", name)
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

// TestRPiWiFiFirmware checks the Wi-Fi firmware names against what
// brcmfmac requests on each model: the board type is the first root
// compatible of the model's device tree (the driver's NVRAM suffix), and
// the chip's base name must be one the driver in kernel.rpi knows. It also
// checks that nothing else is shipped.
func TestRPiWiFiFirmware(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", rpi.Board.KernelModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", rpi.Board.KernelModule, err)
	}
	dir := strings.TrimSpace(string(out))
	kos, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*/kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko"))
	if len(kos) != 1 {
		t.Fatalf("brcmfmac.ko in %s: found %v, want one", dir, kos)
	}
	ko, err := os.ReadFile(kos[0])
	if err != nil {
		t.Fatal(err)
	}
	shipped := map[string]bool{}
	for _, f := range rpi.Board.LinuxFirmware {
		shipped[f] = true
	}
	for l := range rpi.Board.LinuxFirmwareLinks {
		shipped[l] = true
	}
	needed := map[string]bool{}
	for model, base := range rpi.WiFiFirmware {
		m, ok := rpi.Model(model)
		dtb := m.DeviceTree
		if !ok {
			t.Errorf("%s: not in rpi.Models", model)
			continue
		}
		compat, err := rootCompatible(filepath.Join(dir, dtb))
		if err != nil {
			t.Fatalf("%s: %v", dtb, err)
		}
		want := []string{"brcm/" + base + ".bin", "brcm/" + base + "." + compat + ".txt"}
		// The modinfo lists a .clm_blob only for chips the driver asks one for.
		if bytes.Contains(ko, []byte("firmware=brcm/"+base+".clm_blob\x00")) {
			want = append(want, "brcm/"+base+".clm_blob")
		}
		if !bytes.Contains(ko, []byte("firmware=brcm/"+base+".bin\x00")) {
			t.Errorf("%s: brcmfmac.ko does not request brcm/%s.bin", model, base)
		}
		t.Logf("%s: board type %s, needs %v", model, compat, want)
		for _, f := range want {
			needed[f] = true
			if !shipped[f] {
				t.Errorf("%s (%s): %s not shipped", model, compat, f)
			}
		}
	}
	for f := range shipped {
		if !needed[f] {
			t.Errorf("%s shipped but no model requests it", f)
		}
	}
}

// rootCompatible returns the first string of the root node's compatible
// property in a flattened device tree (devicetree specification, chapter
// 5), which brcmfmac uses as the board type.
func rootCompatible(dtbPath string) (string, error) {
	b, err := os.ReadFile(dtbPath)
	if err != nil {
		return "", err
	}
	u32 := func(off int) uint32 {
		if off < 0 || off+4 > len(b) {
			return 9 // FDT_END
		}
		return binary.BigEndian.Uint32(b[off:])
	}
	if len(b) < 40 || u32(0) != 0xd00dfeed {
		return "", fmt.Errorf("not a flattened device tree")
	}
	strs := int(u32(12))
	cstr := func(off int) string {
		if off < 0 || off >= len(b) {
			return ""
		}
		s, _, _ := strings.Cut(string(b[off:]), "\x00")
		return s
	}
	depth := 0
	for p := int(u32(8)); ; {
		tok := u32(p)
		p += 4
		switch tok {
		case 1: // FDT_BEGIN_NODE, name padded to 4 bytes
			p += (len(cstr(p)) + 4) &^ 3
			depth++
		case 2: // FDT_END_NODE
			depth--
		case 3: // FDT_PROP: len, nameoff, value padded to 4 bytes
			n, name := int(u32(p)), cstr(strs+int(u32(p+4)))
			if depth == 1 && name == "compatible" && p+8+n <= len(b) {
				first, _, _ := strings.Cut(string(b[p+8:p+8+n]), "\x00")
				return first, nil
			}
			p += 8 + (n+3)&^3
		case 4: // FDT_NOP
		default:
			return "", fmt.Errorf("no root compatible")
		}
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
		"fw abs":     func(b *boards.Board) { b.LinuxFirmware = []string{"/lib/firmware/brcm/x.bin"} },
		"fw escape":  func(b *boards.Board) { b.LinuxFirmware = []string{"../x.bin"} },
		"fw unclean": func(b *boards.Board) { b.LinuxFirmware = []string{"brcm//x.bin"} },
		"fw twice":   func(b *boards.Board) { b.LinuxFirmware = []string{"brcm/x.bin", "brcm/x.bin"} },
		"fw dangling link": func(b *boards.Board) {
			*b = rpi.Board
			b.LinuxFirmwareLinks = map[string]string{"brcm/a.txt": "b.txt"}
		},
		"fw link escapes": func(b *boards.Board) {
			b.LinuxFirmware = []string{"x.txt"}
			b.LinuxFirmwareLinks = map[string]string{"brcm/a.txt": "../../x.txt"}
		},
		"fw file and link": func(b *boards.Board) {
			b.LinuxFirmware = []string{"brcm/a.txt", "brcm/b.txt"}
			b.LinuxFirmwareLinks = map[string]string{"brcm/a.txt": "b.txt"}
		},
	} {
		b := x86.Board
		b.Cmdline = append([]string(nil), b.Cmdline...)
		mutate(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want error", name)
		}
	}
}

// TestCheckBootFiles: the rpi boot partition in the A/B layout passes
// with everything each model needs, and each missing piece is named.
func TestCheckBootFiles(t *testing.T) {
	config := "os_prefix=a/\n" + rpi.ConfigTxt
	complete := func() map[string][]byte {
		kernel := make([]byte, 1024)
		copy(kernel[56:], "ARM\x64")
		files := map[string][]byte{"/config.txt": []byte(config)}
		for _, f := range rpi.Board.FirmwareFiles {
			files["/"+f] = []byte("x")
		}
		for _, slot := range []string{"a", "b"} {
			files["/"+slot+"/vmlinuz"] = kernel
			files["/"+slot+"/cmdline.txt"] = []byte("ro\n")
			for _, f := range rpi.Board.DeviceTrees {
				files["/"+slot+"/"+f] = []byte("x")
			}
		}
		return files
	}
	if err := rpi.Board.CheckBootFiles(complete()); err != nil {
		t.Fatalf("complete boot partition: %v", err)
	}
	// As the image builder writes it: slot b's files empty.
	fresh := complete()
	for p := range fresh {
		if strings.HasPrefix(p, "/b/") && p != "/b/cmdline.txt" {
			fresh[p] = []byte{}
		}
	}
	if err := rpi.Board.CheckBootFiles(fresh); err != nil {
		t.Fatalf("boot partition with an empty slot b: %v", err)
	}
	// Slot b selected: a/ is then the other slot, checked the same way.
	files := complete()
	files["/config.txt"] = []byte(strings.Replace(config, "os_prefix=a/", "os_prefix=b/", 1))
	if err := rpi.Board.CheckBootFiles(files); err != nil {
		t.Fatalf("slot b selected: %v", err)
	}
	for _, c := range []struct {
		name, want string
		change     func(map[string][]byte)
	}{
		{"no start4.elf", "Raspberry Pi 4 Model B: no start4.elf", func(f map[string][]byte) { delete(f, "/start4.elf") }},
		{"no bootcode.bin", "Raspberry Pi 3 Model B: no bootcode.bin", func(f map[string][]byte) { delete(f, "/bootcode.bin") }},
		{"no Pi 500 tree", "Raspberry Pi 500: no a/bcm2712-rpi-500.dtb (the selected slot)", func(f map[string][]byte) { delete(f, "/a/bcm2712-rpi-500.dtb") }},
		{"no Pi 4 tree in b", "Raspberry Pi 4 Model B: no b/bcm2711-rpi-4-b.dtb: the other slot has no place", func(f map[string][]byte) { delete(f, "/b/bcm2711-rpi-4-b.dtb") }},
		{"tree at the root only", "Raspberry Pi 3 Model B: no a/bcm2710-rpi-3-b.dtb", func(f map[string][]byte) {
			f["/bcm2710-rpi-3-b.dtb"] = f["/a/bcm2710-rpi-3-b.dtb"]
			delete(f, "/a/bcm2710-rpi-3-b.dtb")
		}},
		{"no config.txt", "no config.txt", func(f map[string][]byte) { delete(f, "/config.txt") }},
		{"no os_prefix", "Raspberry Pi 3 Model B: config.txt sets no os_prefix for it: not an A/B boot partition", func(f map[string][]byte) {
			f["/config.txt"] = []byte(rpi.ConfigTxt)
		}},
		{"os_prefix not a slot", "config.txt sets os_prefix=c/ for it, not a slot directory", func(f map[string][]byte) {
			f["/config.txt"] = []byte("os_prefix=c/\n" + rpi.ConfigTxt)
		}},
		{"32-bit Pi 4", "Raspberry Pi 4 Model B: config.txt does not set arm_64bit=1", func(f map[string][]byte) {
			f["/config.txt"] = []byte(config + "[pi4]\narm_64bit=0\n")
		}},
		{"kernel for the Pi 5 only", "Raspberry Pi 3 Model B: config.txt names no kernel", func(f map[string][]byte) {
			f["/config.txt"] = []byte(strings.Replace(config, "kernel=vmlinuz", "", 1) + "[pi5]\nkernel=vmlinuz\n")
		}},
		{"kernel missing", "kernel a/vmlinuz (config.txt, the selected slot) is missing", func(f map[string][]byte) { delete(f, "/a/vmlinuz") }},
		{"kernel at the root only", "kernel a/vmlinuz (config.txt, the selected slot) is missing", func(f map[string][]byte) {
			f["/vmlinuz"] = f["/a/vmlinuz"]
			delete(f, "/a/vmlinuz")
		}},
		{"no b kernel", "no b/vmlinuz: the other slot has no place", func(f map[string][]byte) { delete(f, "/b/vmlinuz") }},
		{"32-bit kernel", "not an arm64 Image", func(f map[string][]byte) { f["/a/vmlinuz"] = make([]byte, 1024) }},
	} {
		files := complete()
		c.change(files)
		err := rpi.Board.CheckBootFiles(files)
		if !errors.Is(err, boards.ErrBootFiles) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	// Other boards have no Pi firmware to check.
	if err := x86.Board.CheckBootFiles(nil); err != nil {
		t.Errorf("x86: %v", err)
	}
}

func TestParseConfigTxt(t *testing.T) {
	config := "# c\narm_64bit=1\n[pi4]\nkernel=k4\n[cm4]\notg_mode=1\n[pi5]\nkernel=k5\n[all]\nenable_uart = 1\n"
	for _, c := range []struct {
		filters []string
		want    map[string]string
	}{
		{[]string{"pi3"}, map[string]string{"arm_64bit": "1", "enable_uart": "1"}},
		{[]string{"pi4"}, map[string]string{"arm_64bit": "1", "enable_uart": "1", "kernel": "k4"}},
		{[]string{"pi4", "cm4"}, map[string]string{"arm_64bit": "1", "enable_uart": "1", "kernel": "k4", "otg_mode": "1"}},
		{[]string{"pi5"}, map[string]string{"arm_64bit": "1", "enable_uart": "1", "kernel": "k5"}},
	} {
		if got := boards.ParseConfigTxt(config, c.filters); !maps.Equal(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.filters, got, c.want)
		}
	}
}
