package fat16

import (
	"bytes"
	"errors"
	iofs "io/fs"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/memvol"
)

// TestReplace gives files new contents of other sizes in free clusters,
// keeps every other file, refuses what does not fit with the volume
// unchanged, and leaves a volume fsck.fat finds clean.
func TestReplace(t *testing.T) {
	fs, files := testFS(t)
	fs.Add("/a/vmlinuz", bytes.Repeat([]byte{1}, 5<<20))
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	vol := memVol(img)
	for i, n := range []int{6<<20 + 3, 100, 0, 9 << 20} {
		want := bytes.Repeat([]byte{byte('a' + i)}, n)
		if err := Replace(vol, "a/vmlinuz", want); err != nil {
			t.Fatalf("replace with %d bytes: %v", n, err)
		}
		if got, err := ReadFile(vol, "A/VMLINUZ"); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after replacing with %d bytes: read %d bytes, %v", n, len(got), err)
		}
		for p, want := range files {
			if got, err := ReadFile(vol, p[1:]); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s changed by replacing another file: %v", p, err)
			}
		}
	}
	before := bytes.Clone(img)
	if err := Replace(vol, "a/vmlinuz", make([]byte, 60<<20)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("60 MiB into a 64 MiB volume holding 12 MiB: %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(before, img) {
		t.Fatal("a refused replace changed the volume")
	}
	if err := Replace(vol, "a/missing", nil); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	memvol.FsckClean(t, img)
}

// TestReplaceCut cuts the power at every write of a Replace: the file
// reads as either its old or its new contents, never anything else, and
// the next Replace still succeeds (it takes back the clusters the cut
// left allocated).
func TestReplaceCut(t *testing.T) {
	fs := New(Options{Size: 8 << 20, Label: "cut", ModTime: time.Unix(1700000000, 0)})
	oldData := bytes.Repeat([]byte{1}, 5000)
	newData := bytes.Repeat([]byte{2}, 7000)
	fs.Add("/b/vmlinuz", oldData)
	fs.Add("/b/other.dtb", []byte("dtb"))
	img, _, err := fs.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for cut := 0; ; cut++ {
		vol := &memvol.Cut{Vol: memVol(bytes.Clone(img)), Left: cut}
		err := Replace(vol, "b/vmlinuz", newData)
		got, rerr := ReadFile(vol.Vol, "b/vmlinuz")
		if rerr != nil || !(bytes.Equal(got, oldData) || bytes.Equal(got, newData)) {
			t.Fatalf("cut after %d writes: read %d bytes, %v", cut, len(got), rerr)
		}
		if again := Replace(vol.Vol, "b/vmlinuz", newData); again != nil {
			t.Fatalf("cut after %d writes: the next replace: %v", cut, again)
		}
		if d, _ := ReadFile(vol.Vol, "b/other.dtb"); string(d) != "dtb" {
			t.Fatalf("cut after %d writes: another file changed", cut)
		}
		if err == nil {
			if cut < 3 {
				t.Fatalf("a replace of 7 clusters done in %d writes", cut)
			}
			return
		}
	}
}
