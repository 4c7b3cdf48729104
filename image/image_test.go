package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/boards/qemuarm64"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/image/bootpart"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/vm"
	"github.com/pc2/pc2/internal/testing/testenv"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, p := range []string{qemu.Board.EFIBootloader} {
		if _, err := os.Stat(p); err != nil {
			testenv.SkipOrFail(t, "%s missing (apt-get install systemd-boot-efi)", p)
		}
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.SkipOrFail(t, "mkfs.ext4 missing (apt-get install e2fsprogs)")
	}
	needSyslinux(t) // the qemu board boots by BIOS too
}

func testOptions(dir string) Options {
	return Options{
		Board: qemu.Board,
		ExtraFiles: map[string][]byte{
			"/etc/gokr-pw.txt": []byte("secret"),
			"/etc/hostname":    []byte("pc2-test"),
		},
		BootFiles:       map[string][]byte{"/pc2-settings.json": []byte("{}\n")},
		SourceDateEpoch: 1700000000,
		Output:          filepath.Join(dir, "disk.img"),
		RootSize:        64 * MiB,
		PermSize:        32 * MiB,
	}
}

func sha(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestBuildReproducible(t *testing.T) {
	needTools(t)
	if testing.Short() {
		t.Skip("builds two images")
	}
	ctx := context.Background()
	var sums [2][3]string
	var res *Result
	for i := range sums {
		dir := t.TempDir()
		var err error
		res, err = Build(ctx, testOptions(dir))
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = [3]string{sha(t, res.Image), sha(t, res.Root), sha(t, res.Boot)}
		t.Logf("build %d: image %s root %s boot %s", i, sums[i][0][:12], sums[i][1][:12], sums[i][2][:12])
		checkImage(t, res, testOptions(dir))
		for _, p := range []string{res.Image, res.Root, res.Boot} {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err == nil {
				t.Logf("%s: %d bytes, %d allocated", filepath.Base(p), st.Size, st.Blocks*512)
			}
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("two builds differ:\n%v\n%v", sums[0], sums[1])
	}
}

// checkImage verifies the layout the way the boot firmware, the kernel and
// gokrazy's init look at it.
func checkImage(t *testing.T, res *Result, opts Options) {
	t.Helper()
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	img, err := os.Open(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	l := diskLayout(opts)
	if st, _ := img.Stat(); st.Size() != l.total {
		t.Errorf("image size %d, want %d", st.Size(), l.total)
	}

	if opts.Board.MBR {
		checkMBR(t, img, res, l)
	} else {
		checkGPT(t, img, res, l)
	}

	// Root A holds the squashfs; the superblock time is the epoch.
	sb := make([]byte, 12)
	if _, err := img.ReadAt(sb, l.start[1]); err != nil {
		t.Fatal(err)
	}
	if string(sb[:4]) != "hsqs" {
		t.Errorf("p2 magic %q, want hsqs", sb[:4])
	}
	if got := binary.LittleEndian.Uint32(sb[8:]); int64(got) != opts.SourceDateEpoch {
		t.Errorf("squashfs time %d, want %d", got, opts.SourceDateEpoch)
	}

	// Perm is ext4 (magic 0xef53 at 1024+56).
	magic := make([]byte, 2)
	if _, err := img.ReadAt(magic, l.start[3]+1024+56); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(magic) != 0xef53 {
		t.Errorf("p4 is not ext4")
	}

	// Boot partition in the image equals boot.img.
	boot, err := os.ReadFile(res.Boot)
	if err != nil {
		t.Fatal(err)
	}
	inImg := make([]byte, len(boot))
	if _, err := img.ReadAt(inImg, l.start[0]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(boot, inImg) {
		t.Error("p1 differs from boot.img")
	}
	for name, want := range opts.BootFiles {
		if got, err := bootpart.ReadFile(img, name[1:]); err != nil || !bytes.Equal(got, want) {
			t.Errorf("boot file %s: %q, %v", name, got, err)
		}
	}
	checkRootWithUnsquashfs(t, res.Root)
}

// checkGPT checks the GPT entries at LBA 2, as gokrazy's rootdev reads
// them: p1's GUID is what root=PARTUUID= names.
func checkGPT(t *testing.T, img *os.File, res *Result, l layout) {
	t.Helper()
	ents := make([]byte, 4*128)
	if _, err := img.ReadAt(ents, 1024); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		got := guidFromBytes(ents[i*128+16 : i*128+32])
		if got != res.PartGUIDs[i] {
			t.Errorf("p%d GUID %s, want %s", i+1, got, res.PartGUIDs[i])
		}
		first := binary.LittleEndian.Uint64(ents[i*128+32:])
		if int64(first)*512 != l.start[i] {
			t.Errorf("p%d starts at LBA %d, want %d", i+1, first, l.start[i]/512)
		}
	}
	if want := "root=PARTUUID=" + strings.ToLower(res.PartGUIDs[0]) + "/PARTNROFF=1"; !strings.HasPrefix(res.Cmdline, want) {
		t.Errorf("cmdline %q, want prefix %q", res.Cmdline, want)
	}
}

// checkMBR checks the MBR as the Pi boot ROM, the kernel and gokrazy's
// rootdev read it: signature at 440 (followed by two zero bytes), four
// primary partitions, root=PARTUUID=<signature>-02.
func checkMBR(t *testing.T, img *os.File, res *Result, l layout) {
	t.Helper()
	b := make([]byte, 512)
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		t.Fatalf("no MBR boot signature")
	}
	sig := fmt.Sprintf("%08x", binary.LittleEndian.Uint32(b[440:]))
	if sig != res.DiskGUID || b[444] != 0 || b[445] != 0 {
		t.Errorf("disk signature %s (trailer %x), want %s", sig, b[444:446], res.DiskGUID)
	}
	for i, typ := range []byte{0x0e, 0x83, 0x83, 0x83} {
		e := b[446+16*i:]
		if e[4] != typ {
			t.Errorf("p%d type %#x, want %#x", i+1, e[4], typ)
		}
		if got := int64(binary.LittleEndian.Uint32(e[8:])) * 512; got != l.start[i] {
			t.Errorf("p%d starts at %d, want %d", i+1, got, l.start[i])
		}
		if got := int64(binary.LittleEndian.Uint32(e[12:])) * 512; got != l.size[i] {
			t.Errorf("p%d size %d, want %d", i+1, got, l.size[i])
		}
	}
	if want := "root=PARTUUID=" + sig + "-02 "; !strings.HasPrefix(res.Cmdline, want) {
		t.Errorf("cmdline %q, want prefix %q", res.Cmdline, want)
	}
}

// checkRootWithUnsquashfs lists the root with the reference tool, when
// installed (squashfs-tools), and checks gokrazy's required entries.
func checkRootWithUnsquashfs(t *testing.T, root string) {
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Log("unsquashfs not installed; skipping root listing")
		return
	}
	out, err := exec.Command("unsquashfs", "-lls", "-n", root).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	for _, want := range []string{
		"squashfs-root/gokrazy/init", "squashfs-root/gokrazy/ntp",
		"squashfs-root/gokrazy/randomd", "squashfs-root/etc/resolv.conf -> /tmp/resolv.conf",
		"squashfs-root/etc/gokr-pw.txt", "squashfs-root/etc/hostname", "squashfs-root/perm",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("root lacks %s", want)
		}
	}
}

// guidFromBytes formats an on-disk (mixed-endian) GUID, per the UEFI spec.
func guidFromBytes(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

func TestOptionsValidation(t *testing.T) {
	for name, mutate := range map[string]func(*Options){
		"no output":   func(o *Options) { o.Output = "" },
		"small boot":  func(o *Options) { o.BootSize = 32 * MiB },
		"unaligned":   func(o *Options) { o.RootSize = MiB + 1 },
		"bad prog":    func(o *Options) { o.Programs = map[string]string{"a/b": "x"} },
		"bad file":    func(o *Options) { o.ExtraFiles = map[string][]byte{"etc/x": nil} },
		"boot subdir": func(o *Options) { o.BootFiles = map[string][]byte{"/a/b.txt": nil} },
		"no board":    func(o *Options) { o.Board.Name = "" },
		"external name": func(o *Options) {
			o.External = map[string]External{"a b": {Module: "example.com/m", Version: "v1.0.0", Package: "cmd/m"}}
		},
		"external twice": func(o *Options) {
			o.Programs = map[string]string{"m": "x"}
			o.External = map[string]External{"m": {Module: "example.com/m", Version: "v1.0.0", Package: "cmd/m"}}
		},
		"external no version": func(o *Options) {
			o.External = map[string]External{"m": {Module: "example.com/m", Version: "latest", Package: "cmd/m"}}
		},
		"external escapes": func(o *Options) {
			o.External = map[string]External{"m": {Module: "example.com/m", Version: "v1.0.0", Package: "../x"}}
		},
	} {
		o := testOptions(t.TempDir())
		mutate(&o)
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("%s: Build() = nil error", name)
		}
	}
}

func TestGUIDsDeterministic(t *testing.T) {
	a, b := testOptions("x"), testOptions("y")
	if newGUIDs(a.inputHash()) != newGUIDs(b.inputHash()) {
		t.Error("same inputs, different GUIDs")
	}
	b.ExtraFiles = map[string][]byte{"/etc/hostname": []byte("other")}
	if newGUIDs(a.inputHash()).disk == newGUIDs(b.inputHash()).disk {
		t.Error("different inputs, same disk GUID")
	}
	g := newGUIDs(a.inputHash())
	for i, p := range g.parts {
		if !strings.HasSuffix(p, fmt.Sprintf("%04X", i+1)) {
			t.Errorf("p%d GUID %s does not end in its number", i+1, p)
		}
	}
}

// buildFor builds and checks the test image for board.
func buildFor(t *testing.T, board boards.Board) (*Result, Options) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testenv.SkipOrFail(t, "mkfs.ext4 missing (apt-get install e2fsprogs)")
	}
	if testing.Short() {
		t.Skip("cross-compiles an image")
	}
	opts := testOptions(t.TempDir())
	opts.Board = board
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, res, opts)
	return res, opts
}

// TestBuildArm64 builds the qemuarm64 image: arm64 programs, the same GPT
// layout, and a boot partition with only config.txt and each slot's
// kernel and cmdline.txt (direct kernel boot, no EFI boot loader).
func TestBuildArm64(t *testing.T) {
	res, opts := buildFor(t, qemuarm64.Board)

	files, err := bootFiles(opts, kernelDirFor(t, opts.Board.KernelModule), "", res.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	if want := []string{"/a/cmdline.txt", "/a/vmlinuz", "/b/cmdline.txt", "/b/vmlinuz", "/config.txt"}; !slices.Equal(names, want) {
		t.Errorf("boot files %v, want %v", names, want)
	}
	if !strings.Contains(res.Cmdline, "console=ttyAMA0") {
		t.Errorf("cmdline %q lacks the PL011 console", res.Cmdline)
	}

	// The init in the root is an arm64 executable.
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		testenv.SkipOrFail(t, "unsquashfs missing (apt-get install squashfs-tools)")
	}
	x := filepath.Join(t.TempDir(), "x")
	if out, err := exec.Command("unsquashfs", "-d", x, res.Root, "gokrazy/init").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	f, err := elf.Open(filepath.Join(x, "gokrazy/init"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("/gokrazy/init is %v, want EM_AARCH64", f.Machine)
	}
}

func kernelDirFor(t *testing.T, module string) string {
	t.Helper()
	dir, err := moduleDir(context.Background(), ".", module)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBuildRPi builds the rpi image and reads its boot partition the way
// the Pi firmware does: MBR, FAT16, config.txt, cmdline.txt, the kernel,
// the firmware and one device tree per supported model; and the Wi-Fi
// firmware in the root file system.
func TestBuildRPi(t *testing.T) {
	needFirmwareDeb(t)
	res, opts := buildFor(t, rpi.Board)
	checkRootFirmware(t, res, opts)
	// The firmware files keep the build reproducible (the qemu board, in
	// TestBuildReproducible, has none).
	opts.Output = filepath.Join(t.TempDir(), "disk.img")
	again, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if sha(t, res.Root) != sha(t, again.Root) || sha(t, res.Image) != sha(t, again.Image) {
		t.Error("two rpi builds differ")
	}
	img, err := os.Open(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	read := func(name string) []byte {
		t.Helper()
		b, err := vm.ReadBootFile(img, name)
		if err != nil {
			t.Fatalf("boot partition: %v", err)
		}
		return b
	}
	cfg := string(read("config.txt"))
	if len(cfg) != bootslot.PadSize || !strings.HasPrefix(cfg, "os_prefix=a/\n") {
		t.Errorf("config.txt is %d bytes, want %d starting with os_prefix=a/:\n%s", len(cfg), bootslot.PadSize, cfg)
	}
	for _, want := range []string{"arm_64bit=1", "enable_uart=1", "kernel=vmlinuz"} {
		if !strings.Contains(cfg, want+"\n") {
			t.Errorf("config.txt lacks %s:\n%s", want, cfg)
		}
	}
	// Slot a is complete, slot b has the same files empty (its root is
	// empty too); each cmdline.txt names its own root.
	for slot, root := range map[string]string{"a": "-02 ", "b": "-03 "} {
		cmdline, _, _ := strings.Cut(string(read(slot+"/cmdline.txt")), "\n")
		if !strings.Contains(cmdline, root) || !strings.Contains(cmdline, "console=serial0,115200") {
			t.Errorf("%s/cmdline.txt %q, want root ...%s with console=serial0,115200", slot, cmdline, root)
		}
		if slot == "a" && cmdline != res.Cmdline {
			t.Errorf("a/cmdline.txt %q, want %q", cmdline, res.Cmdline)
		}
		if slot == "b" {
			if k := read("b/vmlinuz"); len(k) != 0 {
				t.Errorf("b/vmlinuz has %d bytes, want an empty place for the first update", len(k))
			}
			for _, m := range rpi.Models {
				if d := read("b/" + m.DeviceTree); len(d) != 0 {
					t.Errorf("b/%s has %d bytes, want none", m.DeviceTree, len(d))
				}
			}
			continue
		}
		if k := read(slot + "/vmlinuz"); len(k) < 1<<20 || string(k[56:60]) != "ARM\x64" {
			t.Errorf("%s/vmlinuz (%d bytes) is not an arm64 Image", slot, len(k))
		}
		for _, m := range rpi.Models {
			if len(read(slot+"/"+m.DeviceTree)) == 0 {
				t.Errorf("%s: %s/%s is empty", m.Name, slot, m.DeviceTree)
			}
		}
	}
	for _, f := range rpi.Board.FirmwareFiles {
		read(f)
	}
	var st unix.Stat_t
	if err := unix.Stat(res.Boot, &st); err == nil {
		t.Logf("boot.img %d bytes, %d allocated; root.squashfs %d bytes", st.Size, st.Blocks*512, res.RootBytes)
	}
}
