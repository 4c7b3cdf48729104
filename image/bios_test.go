package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/boards/x86"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/testenv"
)

func needSyslinux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(syslinuxInstaller); err != nil {
		testenv.SkipOrFail(t, "%s missing (apt-get install syslinux)", syslinuxInstaller)
	}
	if _, err := os.Stat(x86.Board.BIOSBootCode); err != nil {
		testenv.SkipOrFail(t, "%s missing (apt-get install syslinux)", x86.Board.BIOSBootCode)
	}
}

// TestBuildBIOS builds the x86 image and checks, the way a BIOS, gptmbr.bin
// and SYSLINUX look at it, what legacy BIOS boot needs: the GPT-aware boot
// code in the protective MBR, p1 marked legacy BIOS bootable in both GPT
// copies, SYSLINUX's boot sector and files on p1, and a syslinux.cfg that
// boots the same command line and survives gokrazy's in-place edits.
func TestBuildBIOS(t *testing.T) {
	needTools(t)
	res, opts := buildFor(t, x86.Board)
	img, err := os.Open(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	l := diskLayout(opts)

	mbr := make([]byte, 512)
	if _, err := img.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(x86.Board.BIOSBootCode)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mbr[:len(code)], code) {
		t.Errorf("MBR boot code is not %s", x86.Board.BIOSBootCode)
	}
	if mbr[446+4] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Errorf("protective MBR damaged: type %#x, signature %x", mbr[446+4], mbr[510:])
	}

	// Primary GPT at LBA 1, the backup where the primary says; each names
	// its entry array, whose CRC it holds.
	alt := make([]byte, 8)
	if _, err := img.ReadAt(alt, 512+32); err != nil {
		t.Fatal(err)
	}
	if got, want := binary.LittleEndian.Uint64(alt), uint64(l.total/512-1); got != want {
		t.Errorf("backup GPT at LBA %d, want the last one, %d", got, want)
	}
	for name, hdrOff := range map[string]int64{"primary": 512, "backup": int64(binary.LittleEndian.Uint64(alt)) * 512} {
		hdr := make([]byte, 92)
		if _, err := img.ReadAt(hdr, hdrOff); err != nil {
			t.Fatal(err)
		}
		if string(hdr[:8]) != "EFI PART" {
			t.Fatalf("%s GPT header missing at %d (disk %d bytes)", name, hdrOff, l.total)
		}
		n, size := binary.LittleEndian.Uint32(hdr[80:]), binary.LittleEndian.Uint32(hdr[84:])
		ents := make([]byte, n*size)
		if _, err := img.ReadAt(ents, int64(binary.LittleEndian.Uint64(hdr[72:]))*512); err != nil {
			t.Fatal(err)
		}
		if got, want := crc32.ChecksumIEEE(ents), binary.LittleEndian.Uint32(hdr[88:]); got != want {
			t.Errorf("%s GPT entries CRC %#x, header says %#x", name, got, want)
		}
		for i := range 4 {
			attrs := binary.LittleEndian.Uint64(ents[uint32(i)*size+48:])
			if want := i == 0; (attrs&legacyBIOSBootable != 0) != want {
				t.Errorf("%s GPT: p%d attributes %#x, want legacy BIOS bootable %v", name, i+1, attrs, want)
			}
		}
	}

	boot, err := os.ReadFile(res.Boot)
	if err != nil {
		t.Fatal(err)
	}
	// SYSLINUX's boot sector code, with the BPB fat16 wrote (what
	// gokrazy's reader and the kernel's vfat read) left alone.
	if string(boot[3:11]) != "SYSLINUX" {
		t.Errorf("boot sector OEM name %q, want SYSLINUX (its boot code)", boot[3:11])
	}
	if string(boot[54:62]) != "FAT16   " || binary.LittleEndian.Uint32(boot[28:]) != uint32(l.start[0]/512) {
		t.Errorf("BPB changed: type %q, hidden sectors %d", boot[54:62], binary.LittleEndian.Uint32(boot[28:]))
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := fat16.ReadFile(bytes.NewReader(boot), name)
		if err != nil {
			t.Fatalf("boot partition: %v", err)
		}
		return b
	}
	if sys := read("ldlinux.sys"); len(sys) < 4096 {
		t.Errorf("ldlinux.sys is %d bytes", len(sys))
	}
	if c32 := read("ldlinux.c32"); !bytes.HasPrefix(c32, []byte("\x7fELF")) {
		t.Errorf("ldlinux.c32 is not an ELF module")
	}
	// The installer wrote through mtools: the files fat16 wrote read back
	// the same, so gokrazy's in-place edits still find them.
	cmdlineTxt := read("a/cmdline.txt")
	if line, _, _ := strings.Cut(string(cmdlineTxt), "\n"); line != res.Cmdline {
		t.Errorf("cmdline.txt %q, want %q", line, res.Cmdline)
	}
	if _, err := exec.LookPath("fsck.fat"); err == nil {
		p := t.TempDir() + "/boot.img"
		if err := os.WriteFile(p, boot, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("fsck.fat", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("fsck.fat -n boot.img: %v\n%s", err, out)
		}
	}

	cfg := read(strings.TrimPrefix(syslinuxCfg, "/"))
	if len(cfg) != bootslot.PadSize {
		t.Errorf("syslinux.cfg is %d bytes, want %d (padded like cmdline.txt)", len(cfg), bootslot.PadSize)
	}
	end := bytes.LastIndexByte(cfg, '\n')
	if end < 0 || strings.Trim(string(cfg[end+1:]), " ") != "" {
		t.Fatalf("syslinux.cfg %q: want spaces only after the last newline", cfg)
	}
	lines := strings.Split(string(cfg[:end]), "\n")
	if lines[0] != "SERIAL 0 115200" {
		t.Errorf("syslinux.cfg starts with %q; SERIAL must come first", lines[0])
	}
	for _, want := range []string{"DEFAULT pc2", "LABEL pc2", "LINUX /a/vmlinuz", "NOESCAPE 1", "ALLOWOPTIONS 0"} {
		if !slices.Contains(lines, want) {
			t.Errorf("syslinux.cfg lacks the line %q:\n%s", want, cfg[:end])
		}
	}
	if last := lines[len(lines)-1]; last != "APPEND "+res.Cmdline {
		t.Errorf("syslinux.cfg's last line is %q, want APPEND and the command line", last)
	}
	if n := strings.Count(string(cfg), "root="); n != 1 {
		t.Errorf("syslinux.cfg has %d root= parameters, want 1 (the one an A/B switch rewrites)", n)
	}

	// Selecting slot b (bootslot.Select's edit) keeps the file's length
	// and its last newline inside it.
	edited, err := bootslot.Selection(bootslot.Syslinux, cfg, bootslot.B, strings.Replace(res.Cmdline, "/PARTNROFF=1", "/PARTNROFF=2", 1))
	if err != nil {
		t.Fatal(err)
	}
	want := "\nLINUX /b/vmlinuz\nAPPEND " + strings.Replace(res.Cmdline, "/PARTNROFF=1", "/PARTNROFF=2", 1) + "\n"
	if len(edited) != len(cfg) || !strings.Contains(string(edited), want) {
		t.Errorf("after the edit syslinux.cfg is %q, want it to contain %q", edited, want)
	}
}

// TestInstallSyslinuxKeepsCallerFiles: a boot file named like one SYSLINUX
// writes is refused, not silently overwritten by the installer.
func TestInstallSyslinuxKeepsCallerFiles(t *testing.T) {
	needSyslinux(t)
	fs := fat16.New(fat16.Options{Size: 64 * MiB, ModTime: time.Unix(1700000000, 0)})
	fs.Add("/ldlinux.sys", []byte("mine"))
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := installSyslinux(img, time.Unix(1700000000, 0)); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("installSyslinux over a caller's ldlinux.sys: got %v, want ErrInvalidOptions", err)
	}
}
