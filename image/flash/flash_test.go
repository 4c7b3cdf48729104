//go:build linux

package flash

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// testImage is a sparse image of size bytes with data where an appliance
// image has it: a hand-written GPT-like head, a region crossing a 4 MiB
// boundary, a small island, an explicitly written zero block, and the
// backup table at the end. Everything else is a hole.
type testImage struct {
	path string
	want []byte // full contents
	data int64  // bytes written
}

func makeImage(t testing.TB, size int64) testImage {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pc2.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	img := testImage{path: path, want: make([]byte, size)}
	rng := rand.New(rand.NewPCG(1, 2))
	put := func(off, n int64, zero bool) {
		b := img.want[off : off+n]
		if !zero {
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		img.data += n
	}
	copy(img.want[510:], []byte{0x55, 0xaa})
	put(0, 20<<10, false) // protective MBR, GPT header and entries
	put(mib, 3*mib+8<<10, false)
	put(9*mib+4<<10, 4<<10, true) // written, but zeros
	put(17*mib+8<<10, 64<<10, false)
	put(size-20<<10, 20<<10, false) // backup GPT
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return img
}

func blocks(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSuffix(b, []byte("\n"))))
	return len(b), nil
}

func checkContents(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(want) {
		t.Fatalf("target is %d bytes, want at least %d", len(got), len(want))
	}
	if i := firstDiff(got[:len(want)], want); i >= 0 {
		t.Fatalf("target differs from the image at offset %d: got %#x, want %#x", i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestFlashToFile(t *testing.T) {
	const size = 40 * mib
	img := makeImage(t, size)
	imgBlocks := blocks(t, img.path)
	if imgBlocks > size/4 {
		t.Skipf("the temp dir's file system does not keep holes (image uses %d bytes); cannot test sparseness", imgBlocks)
	}
	// A bigger file with other contents: it must be replaced, not patched.
	target := filepath.Join(t.TempDir(), "out.img")
	if err := os.WriteFile(target, bytes.Repeat([]byte{0xee}, 48*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	var calls int
	var last, lastTotal int64
	res, err := Flash(context.Background(), Options{
		Image:  img.path,
		Device: target,
		Logger: testLogger(t),
		Progress: func(done, total int64) {
			if done < last || (lastTotal != 0 && total != lastTotal) {
				t.Errorf("progress went from %d/%d to %d/%d", last, lastTotal, done, total)
			}
			calls++
			last, lastTotal = done, total
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result: %+v", res)
	checkContents(t, target, img.want)
	if st, _ := os.Stat(target); st.Size() != size {
		t.Errorf("target is %d bytes, want %d", st.Size(), size)
	}
	if res.Written != img.data || res.Verified != img.data || res.Zeroed != 0 {
		t.Errorf("got written %d, verified %d, zeroed %d; want %d, %d, 0", res.Written, res.Verified, res.Zeroed, img.data, img.data)
	}
	if calls == 0 || last != lastTotal || last != img.data {
		t.Errorf("progress ended at %d/%d after %d calls, want %d/%d", last, lastTotal, calls, img.data, img.data)
	}
	// Holes stay holes: the target uses about as many blocks as the image
	// (metadata of the file system aside).
	if got := blocks(t, target); got > imgBlocks+256<<10 {
		t.Errorf("target allocates %d bytes, image %d: holes were filled", got, imgBlocks)
	}
}

func TestFlashToNewFile(t *testing.T) {
	img := makeImage(t, 24*mib)
	target := filepath.Join(t.TempDir(), "new.img")
	if _, err := Flash(context.Background(), Options{Image: img.path, Device: target}); err != nil {
		t.Fatal(err)
	}
	checkContents(t, target, img.want)
}

func TestRefuseImageItself(t *testing.T) {
	img := makeImage(t, 24*mib)
	link := filepath.Join(t.TempDir(), "link.img")
	if err := os.Link(img.path, link); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{img.path, link} {
		_, err := Flash(context.Background(), Options{Image: img.path, Device: dev, Force: true})
		if !errors.Is(err, ErrTargetIsImage) {
			t.Errorf("flash %s onto %s: got %v, want %v", img.path, dev, err, ErrTargetIsImage)
		}
	}
	checkContents(t, img.path, img.want)
}

func TestRefuseDirectory(t *testing.T) {
	img := makeImage(t, 24*mib)
	_, err := Flash(context.Background(), Options{Image: img.path, Device: t.TempDir(), Force: true})
	if !errors.Is(err, ErrNotDisk) {
		t.Errorf("got %v, want %v", err, ErrNotDisk)
	}
}

func TestVerifyCatchesCorruption(t *testing.T) {
	img := makeImage(t, 24*mib)
	t.Run("changed between write and verify", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "out.img")
		_, err := Flash(context.Background(), Options{
			Image: img.path, Device: target, Logger: testLogger(t),
			afterWrite: func(*os.File) error {
				// Another writer, as a failing card would: through its own
				// descriptor and onto the medium.
				f, err := os.OpenFile(target, os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte{^img.want[2*mib]}, 2*mib); err != nil {
					return err
				}
				return f.Sync()
			},
		})
		t.Logf("Flash: %v", err)
		if !errors.Is(err, ErrVerify) {
			t.Fatalf("got %v, want %v", err, ErrVerify)
		}
	})
	t.Run("writes lost", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "out.img")
		_, err := Flash(context.Background(), Options{
			Image: img.path, Device: target, Logger: testLogger(t),
			wrap: func(w io.WriterAt) io.WriterAt { return lossyWriter{w, 4 * mib} },
		})
		t.Logf("Flash: %v", err)
		if !errors.Is(err, ErrVerify) {
			t.Fatalf("got %v, want %v", err, ErrVerify)
		}
	})
}

// lossyWriter acknowledges but drops the write at one offset, like a fake
// SD card whose capacity is a lie.
type lossyWriter struct {
	w    io.WriterAt
	drop int64
}

func (l lossyWriter) WriteAt(b []byte, off int64) (int, error) {
	if off == l.drop {
		return len(b), nil
	}
	return l.w.WriteAt(b, off)
}

func TestFlashCanceled(t *testing.T) {
	img := makeImage(t, 24*mib)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Flash(ctx, Options{Image: img.path, Device: filepath.Join(t.TempDir(), "out.img")})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want %v", err, context.Canceled)
	}
}

func TestSegments(t *testing.T) {
	exts := []extent{{0, 20 << 10}, {mib, 3*mib + 8<<10}, {9 * mib, 4 << 10}}
	if got, want := chunks(exts), []extent{{0, 20 << 10}, {mib, 3 * mib}, {4 * mib, 8 << 10}, {9 * mib, 4 << 10}}; !equalExtents(got, want) {
		t.Errorf("chunks got %v, want %v", got, want)
	}
	if got, want := complement(exts, 10*mib), []extent{{20 << 10, mib - 20<<10}, {4*mib + 8<<10, 5*mib - 8<<10}, {9*mib + 4<<10, mib - 4<<10}}; !equalExtents(got, want) {
		t.Errorf("complement got %v, want %v", got, want)
	}
	if got, want := clip(exts, 2*mib), []extent{{0, 20 << 10}, {mib, mib}}; !equalExtents(got, want) {
		t.Errorf("clip got %v, want %v", got, want)
	}
}

func equalExtents(a, b []extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestZeroer checks each way of zeroing, on a file that starts out 0xaa.
func TestZeroer(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		noPunch, noZeroRange bool
	}{{"punch", false, false}, {"zero-range", true, false}, {"write", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, bytes.Repeat([]byte{0xaa}, 3*mib), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			z := zeroer{f: f, fd: int(f.Fd()), w: f, noPunch: tc.noPunch, noZeroRange: tc.noZeroRange}
			if err := z.zero(mib, mib); err != nil {
				t.Fatal(err)
			}
			if z.method != tc.name {
				t.Errorf("zeroed by %q, want %q", z.method, tc.name)
			}
			got := readRange(t, p, 0, 3*mib)
			want := append(append(bytes.Repeat([]byte{0xaa}, mib), make([]byte, mib)...), bytes.Repeat([]byte{0xaa}, mib)...)
			if i := firstDiff(got, want); i >= 0 {
				t.Errorf("byte %d is %#x, want %#x", i, got[i], want[i])
			}
		})
	}
}
