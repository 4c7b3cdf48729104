// Package memvol is a disk volume in memory for the tests of the packages
// that change a boot partition in place (fat16, bootslot): reads and
// writes at offsets, every write recorded, and a power cut after a chosen
// number of writes; and fsck.fat's verdict on a volume.
package memvol

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ErrCut is what a write returns after the power cut.
var ErrCut = errors.New("memvol: power cut")

// Vol is a writable volume; a write past its end fails.
type Vol []byte

func (m Vol) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m).ReadAt(p, off)
}

func (m Vol) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("memvol: write past the end")
	}
	return copy(m[off:], p), nil
}

// Write is one WriteAt a Cut volume took.
type Write struct{ Off, N int64 }

// Cut is a Vol that records its writes and, when Left is not negative,
// takes only the first Left of them: every later one fails with ErrCut
// and changes nothing, as after a power cut.
type Cut struct {
	Vol
	Writes []Write
	Left   int
}

func (c *Cut) WriteAt(p []byte, off int64) (int, error) {
	if c.Left >= 0 && len(c.Writes) >= c.Left {
		return 0, ErrCut
	}
	c.Writes = append(c.Writes, Write{off, int64(len(p))})
	return c.Vol.WriteAt(p, off)
}

// FsckClean runs fsck.fat -n on the FAT volume img when dosfstools is
// installed (scripts/deps.sh installs it) and fails tb if it finds
// anything to repair.
func FsckClean(tb testing.TB, img []byte) {
	tb.Helper()
	if _, err := exec.LookPath("fsck.fat"); err != nil {
		return
	}
	p := filepath.Join(tb.TempDir(), "fat.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("fsck.fat", "-n", p).CombinedOutput(); err != nil {
		tb.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
}
