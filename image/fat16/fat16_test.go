package fat16

import (
	"bytes"
	"encoding/binary"
	"errors"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/memvol"
)

func testFS(t testing.TB) (*FS, map[string][]byte) {
	t.Helper()
	files := map[string][]byte{
		"/EFI/BOOT/BOOTX64.EFI":         bytes.Repeat([]byte{0xaa}, 140891),
		"/loader/entries/gokrazy.conf":  []byte("title gokrazy\rlinux /vmlinuz\roptions root=x\n"),
		"/loader/loader.conf":           []byte("timeout 0\n"),
		"/cmdline.txt":                  []byte("root=x rootwait\n"),
		"/vmlinuz":                      bytes.Repeat([]byte{0x55}, 3<<20+7),
		"/empty":                        nil,
		"/a long name with spaces.text": []byte("x"),
	}
	fs := New(Options{
		Size:     64 << 20,
		Label:    "pc2boot",
		VolumeID: 0x12345678,
		ModTime:  time.Unix(1700000000, 0),
	})
	for p, b := range files {
		fs.Add(p, b)
	}
	return fs, files
}

func TestExtents(t *testing.T) {
	fs, files := testFS(t)
	img, ext, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		e, ok := ext[p]
		if !ok {
			t.Fatalf("no extent for %s", p)
		}
		if got := img[e.Offset : e.Offset+e.Length]; !bytes.Equal(got, want) {
			t.Errorf("%s: extent content differs (len got %d, want %d)", p, len(got), len(want))
		}
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := testFS(t)
	b, _ := testFS(t)
	ia, _, err := a.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	ib, _, _ := b.Bytes()
	if !bytes.Equal(ia, ib) {
		t.Error("two builds of the same files differ")
	}
}

func TestShortNames(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range []struct{ in, want string }{
		{"gokrazy.conf", "GOKRAZ~1CON"},
		{"cmdline.txt", "CMDLINE TXT"},
		{"BOOTX64.EFI", "BOOTX64 EFI"},
		{"vmlinuz", "VMLINUZ    "},
		{"gokrazy.confx", "GOKRAZ~2CON"},
	} {
		if got := string(func() []byte { s := shortName(tt.in, seen); return s[:] }()); got != tt.want {
			t.Errorf("shortName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTooLarge(t *testing.T) {
	fs := New(Options{Size: 4 << 20})
	fs.Add("big", make([]byte, 5<<20))
	if _, _, err := fs.Bytes(); err == nil {
		t.Error("Bytes() = nil error for oversized content")
	}
}

// TestWithDosfstools checks the image with the reference implementation
// (fsck.fat, mtools), when installed.
func TestWithDosfstools(t *testing.T) {
	for _, tool := range []string{"fsck.fat", "mtype"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dosfstools mtools)", tool)
		}
	}
	fs, files := testFS(t)
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fat.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsck.fat", "-n", "-v", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "16 bit entries") {
		t.Fatalf("fsck.fat: %v\n%s", err, out)
	}
	for name, want := range files {
		out, err := exec.Command("mtype", "-i", p, "::"+name).Output()
		if err != nil {
			t.Fatalf("mtype %s: %v", name, err)
		}
		if !bytes.Equal(out, want) {
			t.Errorf("mtype %s: content differs (len got %d, want %d)", name, len(out), len(want))
		}
	}
}

// TestGokrazyLookup finds files the way gokrazy's init does when it edits
// the command line (github.com/gokrazy/internal/fat, which we cannot
// import): geometry from the boot sector assuming one FAT, 8.3 names only,
// 16-bit cluster numbers, contiguous files.
func TestGokrazyLookup(t *testing.T) {
	fs, files := testFS(t)
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	le16 := func(off int) int { return int(img[off]) | int(img[off+1])<<8 }
	ss, spc, reserved, rootEnts, fatSz := le16(11), int(img[13]), le16(14), le16(17), le16(22)
	rootDir := (reserved + fatSz) * ss
	data := rootDir + (rootEnts*32+ss-1)/ss*ss
	lookup := func(p string, shorts []string) (int, int) {
		dir := rootDir
		for i, want := range shorts {
			found := false
			for e := 0; e < rootEnts; e++ {
				ent := img[dir+e*32 : dir+e*32+32]
				if ent[0] == 0 || ent[11] == attrLFN || string(ent[:11]) != want {
					continue
				}
				off := data + (le16(dir+e*32+26)-2)*spc*ss
				if i == len(shorts)-1 {
					return off, int(ent[28]) | int(ent[29])<<8 | int(ent[30])<<16 | int(ent[31])<<24
				}
				dir, found = off, true
				break
			}
			if !found {
				t.Fatalf("%s: %q not found", p, want)
			}
		}
		return 0, 0
	}
	for p, shorts := range map[string][]string{
		"/cmdline.txt":                 {"CMDLINE TXT"},
		"/loader/entries/gokrazy.conf": {"LOADER     ", "ENTRIES    ", "GOKRAZ~1CON"},
	} {
		off, n := lookup(p, shorts)
		if got := img[off : off+n]; !bytes.Equal(got, files[p]) {
			t.Errorf("%s: gokrazy-style lookup read %q, want %q", p, got, files[p])
		}
	}
}

// TestReadFile reads every file back from a written volume, by long name in
// upper case (walk_test.go has more).
func TestReadFile(t *testing.T) {
	fs, files := testFS(t)
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	vol := bytes.NewReader(img)
	for p, want := range files {
		got, err := ReadFile(vol, strings.ToUpper(p[1:]))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %d bytes, %v; want %d bytes", p, len(got), err, len(want))
		}
	}
	if _, err := ReadFile(vol, "missing.txt"); err == nil {
		t.Error("missing file: no error")
	}
	if _, err := ReadFile(bytes.NewReader(make([]byte, 4096)), "cmdline.txt"); err == nil {
		t.Error("not a FAT16 volume: no error")
	}
}

// memVol is a writable volume in memory.
type memVol = memvol.Vol

// TestRewrite replaces a file in place with shorter, longer (within its
// clusters) and too long contents, and checks the other files and, with
// dosfstools installed, the whole volume stay intact.
func TestRewrite(t *testing.T) {
	fs, files := testFS(t)
	fs.Add("/settings.json", bytes.Repeat([]byte(" "), 5000))
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	vol := memVol(img)
	// 1 KiB clusters: the file starts with 5; shrinking frees clusters.
	sizes := []int{5100, 4000, 3, 1024}
	for i, n := range sizes {
		want := bytes.Repeat([]byte{byte('a' + i)}, n)
		if err := Rewrite(vol, "settings.json", want); err != nil {
			t.Fatalf("rewrite %d bytes: %v", len(want), err)
		}
		got, err := ReadFile(vol, "SETTINGS.JSON")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after rewriting %d bytes: read %d bytes, %v", len(want), len(got), err)
		}
	}
	before := bytes.Clone(img)
	err = Rewrite(vol, "settings.json", make([]byte, 1025))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1025 bytes into one cluster: %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(before, img) {
		t.Fatal("a refused rewrite changed the volume")
	}
	if err := Rewrite(vol, "settings.json", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFile(vol, "settings.json"); err != nil || len(got) != 0 {
		t.Fatalf("emptied file: %q, %v", got, err)
	}
	if err := Rewrite(vol, "missing.json", nil); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	for p, want := range files {
		if got, err := ReadFile(vol, p[1:]); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s changed by rewriting another file: %v", p, err)
		}
	}
	memvol.FsckClean(t, img)
}

// TestBrokenChain refuses a file whose cluster chain loops.
func TestBrokenChain(t *testing.T) {
	fs := New(Options{Size: 16 << 20, ModTime: time.Unix(1700000000, 0)})
	fs.Add("/f.txt", bytes.Repeat([]byte("z"), 100000))
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	v, err := openVolume(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.find("f.txt")
	if err != nil {
		t.Fatal(err)
	}
	// Point the file's second cluster back at its first.
	binary.LittleEndian.PutUint16(img[v.fatOff+(e.cluster+1)*2:], uint16(e.cluster))
	if _, err := ReadFile(bytes.NewReader(img), "f.txt"); err == nil || !strings.Contains(err.Error(), "broken cluster chain") {
		t.Fatalf("looping chain: %v", err)
	}
	if err := Rewrite(memVol(img), "f.txt", []byte("x")); err == nil {
		t.Fatal("rewrite through a looping chain: no error")
	}
}
