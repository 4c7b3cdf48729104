//go:build linux

package flash

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// loopDevice attaches a loop device to a new backing file of size bytes
// filled with 0xaa (a card's previous life) and returns both paths.
func loopDevice(t testing.TB, size int64) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "loop device tests need root (losetup); running as uid %d", os.Geteuid())
	}
	backing = filepath.Join(t.TempDir(), "card.bin")
	if err := os.WriteFile(backing, bytes.Repeat([]byte{0xaa}, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		testenv.SkipOrFail(t, "losetup --find --show: %v: %s (apt-get install util-linux; needs /dev/loop-control)", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

func readRange(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFlashLoopDevice(t *testing.T) {
	const size, devSize = 40 * mib, 48 * mib
	img := makeImage(t, size)
	dev, backing := loopDevice(t, devSize)
	desc, err := Describe(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Describe:\n%s", desc)
	if desc.Kind != BlockDevice || desc.Size != devSize || !strings.HasPrefix(desc.Name, "loop") {
		t.Errorf("Describe got %+v, want a %d byte loop block device", desc, devSize)
	}

	res, err := Flash(context.Background(), Options{Image: img.path, Device: dev, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result: %+v", res)
	// Holes read back as zeros, not as the 0xaa that was there.
	checkContents(t, dev, img.want)
	if tail := readRange(t, dev, devSize-mib, mib); !bytes.Equal(tail, make([]byte, mib)) {
		t.Errorf("last MiB of the device (stale backup GPT) was not zeroed")
	}
	if mid := readRange(t, backing, size, devSize-mib-size); !bytes.Equal(mid, bytes.Repeat([]byte{0xaa}, len(mid))) {
		t.Errorf("bytes between the image's end and the device's last MiB were touched")
	}
	if res.Written != img.data || res.Verified != img.data || res.Zeroed != size-img.data+mib {
		t.Errorf("got written %d, verified %d, zeroed %d; want %d, %d, %d", res.Written, res.Verified, res.Zeroed, img.data, img.data, size-img.data+mib)
	}
}

func TestFlashLoopDeviceTooSmall(t *testing.T) {
	const size, devSize = 40 * mib, 16 * mib
	img := makeImage(t, size)
	dev, _ := loopDevice(t, devSize)
	_, err := Flash(context.Background(), Options{Image: img.path, Device: dev, Logger: testLogger(t)})
	if !errors.Is(err, ErrTooSmall) || !strings.Contains(err.Error(), dev) {
		t.Fatalf("got %v, want %v naming %s", err, ErrTooSmall, dev)
	}
	if b := readRange(t, dev, 0, devSize); !bytes.Equal(b, bytes.Repeat([]byte{0xaa}, devSize)) {
		t.Fatalf("refused, but the device was written")
	}

	res, err := Flash(context.Background(), Options{Image: img.path, Device: dev, Force: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Clipped != size-devSize {
		t.Errorf("got %d bytes clipped, want %d", res.Clipped, size-devSize)
	}
	checkContents(t, dev, img.want[:devSize])
}

func TestFlashLoopDeviceBusy(t *testing.T) {
	img := makeImage(t, 24*mib)
	dev, _ := loopDevice(t, 32*mib)
	// Another exclusive opener, as a mount is: the kernel says EBUSY.
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Flash(context.Background(), Options{Image: img.path, Device: dev, Logger: testLogger(t)})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("got %v, want %v", err, ErrInUse)
	}
}
