package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/boards/qemu"
	"golang.org/x/sys/unix"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, p := range []string{qemu.Board.EFIBootloader} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s missing (apt-get install systemd-boot-efi)", p)
		}
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 missing (apt-get install e2fsprogs)")
	}
}

func testOptions(dir string) Options {
	return Options{
		Board: qemu.Board,
		ExtraFiles: map[string][]byte{
			"/etc/gokr-pw.txt": []byte("secret"),
			"/etc/hostname":    []byte("pc2-test"),
		},
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

	// GPT entries at LBA 2, as gokrazy's rootdev reads them: p1's GUID is
	// what root=PARTUUID= names.
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
	checkRootWithUnsquashfs(t, res.Root)
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
		"squashfs-root/gokrazy/init", "squashfs-root/gokrazy/dhcp", "squashfs-root/gokrazy/ntp",
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
		"no output":  func(o *Options) { o.Output = "" },
		"small boot": func(o *Options) { o.BootSize = 32 * MiB },
		"unaligned":  func(o *Options) { o.RootSize = MiB + 1 },
		"bad prog":   func(o *Options) { o.Programs = map[string]string{"a/b": "x"} },
		"bad file":   func(o *Options) { o.ExtraFiles = map[string][]byte{"etc/x": nil} },
		"no board":   func(o *Options) { o.Board.Name = "" },
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
