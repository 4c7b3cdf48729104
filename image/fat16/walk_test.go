package fat16

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nestedFile is the file TestNestedRewrite rewrites: long name, ten
// clusters, three directories down.
const nestedFile = "deep/er/still/A Long Nested Name.json"

// nestedVolume builds a 16 MiB volume (512-byte clusters) with files in
// the root and in subdirectories, one of them ("many") spanning several
// clusters, and returns it with its files (paths without leading slash)
// and their extents.
func nestedVolume(t testing.TB) ([]byte, map[string][]byte, map[string]Extent) {
	t.Helper()
	fill := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return b
	}
	files := map[string][]byte{
		"cmdline.txt":                 []byte("root=x rootwait\n"),
		"vmlinuz":                     fill(3000, 1),
		"EFI/BOOT/BOOTX64.EFI":        fill(140891, 2),
		"loader/loader.conf":          []byte("timeout 0\n"),
		"loader/entries/gokrazy.conf": append([]byte("title gokrazy\n"), bytes.Repeat([]byte(" "), 498)...),
		"loader/empty":                nil,
		nestedFile:                    fill(5000, 3),
	}
	for i := range 40 {
		files[fmt.Sprintf("many/file-%03d.txt", i)] = fill(i*100, byte(i))
	}
	fs := New(Options{Size: 16 << 20, ModTime: time.Unix(1700000000, 0)})
	for p, b := range files {
		fs.Add(p, b)
	}
	img, ext, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return img, files, ext
}

// checkWalk checks that Walk reports exactly the files in want, with their
// sizes, each once.
func checkWalk(t testing.TB, vol []byte, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	err := Walk(bytes.NewReader(vol), func(p string, size int64) error {
		if _, dup := got[p]; dup {
			t.Errorf("Walk reported %s twice", p)
		}
		got[p] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	for p, n := range got {
		if w, ok := want[p]; !ok {
			t.Errorf("Walk reported %s (%d bytes), want no such file", p, n)
		} else if n != w {
			t.Errorf("Walk: %s has %d bytes, want %d", p, n, w)
		}
	}
	for p := range want {
		if _, ok := got[p]; !ok {
			t.Errorf("Walk did not report %s", p)
		}
	}
}

// sizes maps files to their sizes.
func sizes(files map[string][]byte) map[string]int64 {
	m := map[string]int64{}
	for p, b := range files {
		m[p] = int64(len(b))
	}
	return m
}

func TestReadFileNested(t *testing.T) {
	img, files, _ := nestedVolume(t)
	vol := bytes.NewReader(img)
	for p, want := range files {
		for _, name := range []string{p, "/" + p, strings.ToUpper(p), strings.ToLower(p)} {
			if got, err := ReadFile(vol, name); err != nil || !bytes.Equal(got, want) {
				t.Errorf("ReadFile(%q): got %d bytes, %v; want %d bytes", name, len(got), err, len(want))
			}
		}
	}
	// By 8.3 names only, as gokrazy's reader sees them.
	got, err := ReadFile(vol, "LOADER/ENTRIES/GOKRAZ~1.CON")
	if want := files["loader/entries/gokrazy.conf"]; err != nil || !bytes.Equal(got, want) {
		t.Errorf("8.3 path: got %q, %v; want %q", got, err, want)
	}
}

func TestWalk(t *testing.T) {
	img, files, _ := nestedVolume(t)
	checkWalk(t, img, sizes(files))

	stop := errors.New("stop")
	calls := 0
	err := Walk(bytes.NewReader(img), func(string, int64) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("fn returning an error: Walk = %v after %d calls, want %v after 1", err, calls, stop)
	}
	calls = 0
	err = Walk(bytes.NewReader(img), func(string, int64) error { calls++; return iofs.SkipAll })
	if err != nil || calls != 1 {
		t.Errorf("fn returning SkipAll: Walk = %v after %d calls, want nil after 1", err, calls)
	}
	if err := Walk(bytes.NewReader(make([]byte, 4096)), func(string, int64) error { return nil }); err == nil {
		t.Error("Walk of a non-FAT16 volume: no error")
	}
}

// TestRewriteNested rewrites files in subdirectories: same length (only
// the data changes), shorter (clusters freed), too long (refused, nothing
// changed); the other files stay intact and, with dosfstools and mtools
// installed, fsck.fat and mtype agree.
func TestRewriteNested(t *testing.T) {
	img, files, ext := nestedVolume(t)
	vol := memVol(img)

	conf := "loader/entries/gokrazy.conf"
	before := bytes.Clone(img)
	same := bytes.Repeat([]byte("s"), len(files[conf]))
	if err := Rewrite(vol, "/"+conf, same); err != nil {
		t.Fatalf("same-length rewrite: %v", err)
	}
	e := ext["/"+conf]
	if !bytes.Equal(img[:e.Offset], before[:e.Offset]) || !bytes.Equal(img[e.Offset+e.Length:], before[e.Offset+e.Length:]) {
		t.Error("same-length rewrite changed bytes outside the file's data")
	}
	files[conf] = same

	short := bytes.Repeat([]byte("t"), 1000) // 2 of 10 clusters
	if err := Rewrite(vol, strings.ToUpper(nestedFile), short); err != nil {
		t.Fatalf("shorter rewrite: %v", err)
	}
	files[nestedFile] = short

	before = bytes.Clone(img)
	if err := Rewrite(vol, nestedFile, make([]byte, 1025)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1025 bytes into two clusters: %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(before, img) {
		t.Fatal("a refused rewrite changed the volume")
	}

	for p, want := range files {
		if got, err := ReadFile(vol, p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after rewrites: got %d bytes, %v; want %d bytes", p, len(got), err, len(want))
		}
	}
	checkWalk(t, img, sizes(files))

	for _, tool := range []string{"fsck.fat", "mtype"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dosfstools mtools)", tool)
		}
	}
	p := filepath.Join(t.TempDir(), "fat.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsck.fat", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("fsck.fat after rewrites: %v\n%s", err, out)
	}
	for _, name := range []string{conf, nestedFile} {
		out, err := exec.Command("mtype", "-i", p, "::/"+name).Output()
		if err != nil {
			t.Fatalf("mtype %s: %v", name, err)
		}
		if !bytes.Equal(out, files[name]) {
			t.Errorf("mtype %s: got %d bytes, want %d", name, len(out), len(files[name]))
		}
	}
}

func TestLookupErrors(t *testing.T) {
	img, _, _ := nestedVolume(t)
	for _, tt := range []struct {
		name string
		is   error  // wrapped, if not nil
		msg  string // in the message otherwise
	}{
		{"loader/entries/missing.conf", iofs.ErrNotExist, ""},
		{"nodir/gokrazy.conf", iofs.ErrNotExist, ""},
		{"/loader/nodir/gokrazy.conf", iofs.ErrNotExist, ""},
		{"cmdline.txt/x", nil, "cmdline.txt is not a directory"},
		{"loader/entries/gokrazy.conf/x", nil, "loader/entries/gokrazy.conf is not a directory"},
		{"loader/entries", nil, "is a directory"},
		{"", iofs.ErrInvalid, ""},
		{"/", iofs.ErrInvalid, ""},
		{"loader//loader.conf", iofs.ErrInvalid, ""},
		{"loader/../cmdline.txt", iofs.ErrInvalid, ""},
		{"loader/entries/", iofs.ErrInvalid, ""},
	} {
		check := func(op string, err error) {
			switch {
			case err == nil:
				t.Errorf("%s(%q): no error", op, tt.name)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Errorf("%s(%q) = %v, want %v", op, tt.name, err, tt.is)
			case tt.is == nil && (!strings.Contains(err.Error(), tt.msg) || errors.Is(err, iofs.ErrNotExist)):
				t.Errorf("%s(%q) = %v, want %q (and not ErrNotExist)", op, tt.name, err, tt.msg)
			}
		}
		_, err := ReadFile(bytes.NewReader(img), tt.name)
		check("ReadFile", err)
		before := bytes.Clone(img)
		check("Rewrite", Rewrite(memVol(img), tt.name, nil))
		if !bytes.Equal(before, img) {
			t.Fatalf("failed Rewrite(%q) changed the volume", tt.name)
		}
	}
}

// TestBrokenDirectories corrupts directories: a cluster chain that loops,
// and a subdirectory entry pointing at its parent. Every operation must
// end with an error.
func TestBrokenDirectories(t *testing.T) {
	lookup := func(img []byte, name string) (*volume, dirent) {
		t.Helper()
		v, err := openVolume(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		d, err := v.lookup(name)
		if err != nil || !d.dir {
			t.Fatalf("%s: %+v, %v; want a directory", name, d, err)
		}
		return v, d
	}
	walk := func(img []byte) error {
		return Walk(bytes.NewReader(img), func(string, int64) error { return nil })
	}

	t.Run("chain loop", func(t *testing.T) {
		for _, tt := range []struct{ dir, file string }{
			{"loader/entries", "loader/entries/gokrazy.conf"}, // one cluster, pointing at itself
			{"many", "many/file-039.txt"},                     // the last cluster, back to the first
		} {
			img, _, _ := nestedVolume(t)
			v, d := lookup(img, tt.dir)
			cs, err := v.chain(tt.dir, d.cluster)
			if err != nil {
				t.Fatal(err)
			}
			if tt.dir == "many" && len(cs) < 2 {
				t.Fatalf("%s has %d clusters, want several", tt.dir, len(cs))
			}
			binary.LittleEndian.PutUint16(img[v.fatOff+cs[len(cs)-1]*2:], uint16(cs[0]))
			const want = "broken cluster chain"
			if _, err := ReadFile(bytes.NewReader(img), tt.file); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("ReadFile(%s) through a looping directory: %v, want %q", tt.file, err, want)
			}
			if err := Rewrite(memVol(img), tt.file, nil); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Rewrite(%s) through a looping directory: %v, want %q", tt.file, err, want)
			}
			if err := walk(img); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Walk with a looping %s: %v, want %q", tt.dir, err, want)
			}
		}
	})

	t.Run("directory loop", func(t *testing.T) {
		img, _, _ := nestedVolume(t)
		_, efi := lookup(img, "EFI")
		_, boot := lookup(img, "EFI/BOOT")
		binary.LittleEndian.PutUint16(img[boot.off+26:], uint16(efi.cluster))
		if err := walk(img); err == nil || !strings.Contains(err.Error(), "directory loop") {
			t.Errorf("Walk with EFI/BOOT = EFI: %v, want a directory loop", err)
		}
		if _, err := ReadFile(bytes.NewReader(img), "EFI/BOOT/BOOT/BOOT/BOOTX64.EFI"); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("ReadFile through the loop: %v, want ErrNotExist", err)
		}
	})
}

// TestReadMtoolsDirectories reads directories and files another
// implementation wrote into our volume: mtools stores lower-case 8.3 names
// with case flags instead of long names.
func TestReadMtoolsDirectories(t *testing.T) {
	for _, tool := range []string{"mmd", "mcopy", "fsck.fat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dosfstools mtools)", tool)
		}
	}
	img, files, _ := nestedVolume(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "fat.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	added := map[string][]byte{
		"loader/entries/other.conf":  []byte("title other\n"),
		"added/low.txt":              bytes.Repeat([]byte("l"), 700),
		"added/Sub/Mixed Case.Name":  []byte("mixed\n"),
		"added/Sub/UPPER.TXT":        []byte("upper\n"),
		"added/Sub/a.very.long.name": bytes.Repeat([]byte("v"), 2000),
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("mmd", "-i", p, "::/added", "::/added/Sub")
	for name, b := range added {
		src := filepath.Join(dir, "src")
		if err := os.WriteFile(src, b, 0o644); err != nil {
			t.Fatal(err)
		}
		run("mcopy", "-i", p, src, "::/"+name)
		files[name] = b
	}
	run("fsck.fat", "-n", p)
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if got, err := ReadFile(bytes.NewReader(img), name); err != nil || !bytes.Equal(got, b) {
			t.Errorf("ReadFile(%s): got %d bytes, %v; want %d bytes", name, len(got), err, len(b))
		}
	}
	checkWalk(t, img, sizes(files))
}

// TestSize reads the volume's size from its boot sector: the 16-bit
// sector count of a small volume, the 32-bit one of a larger, and the same
// from a volume cut after its last data (as pc2 release ships the boot
// partition).
func TestSize(t *testing.T) {
	for _, size := range []int64{4 << 20, 16 << 20, 64 << 20} {
		fs := New(Options{Size: size, ModTime: time.Unix(1700000000, 0)})
		fs.Add("cmdline.txt", []byte("root=x\n"))
		img, _, err := fs.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Size(bytes.NewReader(img)); err != nil || got != size {
			t.Errorf("%d-byte volume: Size = %d, %v; want %d", size, got, err, size)
		}
		if got, err := Size(bytes.NewReader(img[:64<<10])); err != nil || got != size {
			t.Errorf("%d-byte volume cut to 64 KiB: Size = %d, %v; want %d", size, got, err, size)
		}
	}
	for name, vol := range map[string][]byte{
		"empty":        nil,
		"zeros":        make([]byte, 4096),
		"short sector": bytes.Repeat([]byte{0xff}, 100),
	} {
		if got, err := Size(bytes.NewReader(vol)); err == nil {
			t.Errorf("%s: Size = %d, want an error", name, got)
		}
	}
}
