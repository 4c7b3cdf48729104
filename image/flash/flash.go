//go:build linux

package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors for targets Flash refuses.
var (
	ErrInUse         = errors.New("flash: device is in use")
	ErrRootDisk      = errors.New("flash: device holds the running system")
	ErrTooSmall      = errors.New("flash: target is smaller than the image")
	ErrPartition     = errors.New("flash: target is a partition, not a whole disk")
	ErrNotDisk       = errors.New("flash: target is neither a block device nor a regular file")
	ErrTargetIsImage = errors.New("flash: target is the image itself")
	ErrVerify        = errors.New("flash: verification failed")
)

const (
	chunkSize = 4 << 20
	mib       = 1 << 20
)

// Options configure Flash. Image and Device are required; the zero value
// of every other field is usable.
type Options struct {
	Image  string // sparse image file
	Device string // block device or regular file
	// Force overrides the safety checks: partitions, devices in use, the
	// system disk, and a device smaller than the image (then only the part
	// of the image that fits is written).
	Force bool
	// Progress is called after each piece written or zeroed.
	Progress func(done, total int64)
	// VerifyProgress is called after each piece read back.
	VerifyProgress func(done, total int64)
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Root is where /proc, /sys and /dev are looked up; "" is "/".
	Root string
	// Now is the clock for Result's durations; nil is time.Now.
	Now func() time.Time

	// Test hooks.
	lookup     func(path string) (node, error) // replaces stat of the target
	wrap       func(w io.WriterAt) io.WriterAt // wraps the target for writing
	afterWrite func(target *os.File) error     // runs between fsync and verify
}

// Result reports what Flash did.
type Result struct {
	Target    *Target
	ImageSize int64
	Written   int64 // data bytes copied from the image
	Zeroed    int64 // hole bytes zeroed on a block device
	// ZeroMethod is how holes were zeroed: "punch" (in hardware), "zero-range"
	// (by the kernel) or "write".
	ZeroMethod string
	Clipped    int64 // image bytes past the end of a smaller device (Force)
	Verified   int64 // data bytes read back and compared
	WriteTime  time.Duration
	VerifyTime time.Duration
}

func (o Options) system() system {
	s := hostSystem(o.Root)
	if o.lookup != nil {
		s.lookup = o.lookup
	}
	return s
}

// Preflight describes opts.Device and checks that Flash would write to it,
// without writing. The Target is returned whenever it could be described,
// also with a refusal, so a caller can show what it found.
func Preflight(opts Options) (*Target, error) {
	img, err := os.Stat(opts.Image)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if !img.Mode().IsRegular() {
		return nil, fmt.Errorf("image %s: not a regular file", opts.Image)
	}
	t, err := opts.system().describe(opts.Device)
	if err != nil {
		return nil, err
	}
	return t, check(t, img, opts.Force)
}

func check(t *Target, img os.FileInfo, force bool) error {
	switch t.Kind {
	case Other:
		return fmt.Errorf("refusing %s: %w", t.Path, ErrNotDisk)
	case File:
		if t.info != nil && os.SameFile(t.info, img) {
			return fmt.Errorf("refusing %s: %w", t.Path, ErrTargetIsImage)
		}
		return nil
	case Missing:
		return nil
	}
	if force {
		return nil
	}
	switch {
	case t.Disk != "":
		return fmt.Errorf("refusing %s: %w (write the whole disk, /dev/%s)", t.Path, ErrPartition, t.Disk)
	case t.RootDisk != "": // before InUse: the root disk is always in use too
		return fmt.Errorf("refusing %s: %w (%s)", t.Path, ErrRootDisk, t.RootDisk)
	case len(t.InUse) > 0:
		return fmt.Errorf("refusing %s: %w (%s)", t.Path, ErrInUse, strings.Join(t.InUse, "; "))
	case t.Size < img.Size():
		return fmt.Errorf("refusing %s: %w (%s, image %s)", t.Path, ErrTooSmall, human(t.Size), human(img.Size()))
	}
	return nil
}

// Flash writes opts.Image to opts.Device and verifies it.
func Flash(ctx context.Context, opts Options) (Result, error) {
	var res Result
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	img, err := os.Open(opts.Image)
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	defer img.Close()
	ist, err := img.Stat()
	if err != nil {
		return res, fmt.Errorf("image: %w", err)
	}
	if !ist.Mode().IsRegular() {
		return res, fmt.Errorf("image %s: not a regular file", opts.Image)
	}
	size := ist.Size()
	res.ImageSize = size

	t, err := opts.system().describe(opts.Device)
	if err != nil {
		return res, err
	}
	res.Target = t
	if err := check(t, ist, opts.Force); err != nil {
		return res, err
	}
	exts, err := dataExtents(img, size)
	if err != nil {
		return res, fmt.Errorf("image %s: %w", opts.Image, err)
	}

	dev, devSize, err := openTarget(t, size, opts.Force)
	if err != nil {
		return res, err
	}
	defer dev.Close()
	block := t.Kind == BlockDevice
	limit := size
	if devSize < size {
		limit = devSize
		res.Clipped = size - devSize
		log.Warn("device is smaller than the image; writing only what fits", "device", t.Path, "size", devSize, "image", size)
	}

	var segs []segment
	for _, e := range chunks(clip(exts, limit)) {
		segs = append(segs, segment{extent: e, data: true})
	}
	if block {
		holes := complement(exts, limit)
		if devSize > size {
			holes = append(holes, extent{max(size, devSize-mib), 0})
			holes[len(holes)-1].n = devSize - holes[len(holes)-1].off
		}
		for _, e := range chunks(holes) {
			segs = append(segs, segment{extent: e})
		}
		sortSegments(segs)
	}
	var total, data int64
	for _, s := range segs {
		total += s.n
		if s.data {
			data += s.n
		}
	}
	log.Debug("flashing", "image", opts.Image, "target", t.Path, "data", data, "extents", len(exts), "total", total)

	start := now()
	var w io.WriterAt = dev
	if opts.wrap != nil {
		w = opts.wrap(dev)
	}
	sums, err := write(ctx, img, dev, w, segs, total, &res, opts.Progress)
	if err != nil {
		return res, fmt.Errorf("write %s: %w", t.Path, err)
	}
	if err := dev.Sync(); err != nil {
		return res, fmt.Errorf("write %s: fsync: %w", t.Path, err)
	}
	res.WriteTime = now().Sub(start)
	log.Debug("written", "target", t.Path, "data", res.Written, "zeroed", res.Zeroed, "zero_method", res.ZeroMethod, "took", res.WriteTime)

	if opts.afterWrite != nil {
		if err := opts.afterWrite(dev); err != nil {
			return res, err
		}
	}
	dropCache(dev, block, log)
	start = now()
	if err := verify(ctx, dev, segs, sums, &res, opts.VerifyProgress); err != nil {
		return res, fmt.Errorf("verify %s: %w", t.Path, err)
	}
	res.VerifyTime = now().Sub(start)
	if block {
		// Let the kernel see the new partitions; harmless when it cannot
		// (loop devices without partscan say EINVAL).
		if err := unix.IoctlSetInt(int(dev.Fd()), unix.BLKRRPART, 0); err != nil {
			log.Debug("re-read partition table", "device", t.Path, "err", err)
		}
	}
	return res, dev.Close()
}

func openTarget(t *Target, size int64, force bool) (*os.File, int64, error) {
	if t.Kind != BlockDevice {
		f, err := os.OpenFile(t.Path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, 0, err
		}
		// All holes now; writing the data extents leaves the rest so.
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("truncate %s: %w", t.Path, err)
		}
		return f, size, nil
	}
	flags := os.O_RDWR
	if !force {
		// The kernel refuses exclusive opens of mounted or claimed devices.
		flags |= unix.O_EXCL
	}
	f, err := os.OpenFile(t.Path, flags, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, 0, fmt.Errorf("refusing %s: %w (the kernel reports it busy)", t.Path, ErrInUse)
	}
	if err != nil {
		return nil, 0, err
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("size of %s: %w", t.Path, err)
	}
	if devSize < size && !force {
		f.Close()
		return nil, 0, fmt.Errorf("refusing %s: %w (%s, image %s)", t.Path, ErrTooSmall, human(devSize), human(size))
	}
	return f, devSize, nil
}

type segment struct {
	extent
	data bool // else a hole to zero
}

func write(ctx context.Context, img *os.File, dev *os.File, w io.WriterAt, segs []segment, total int64, res *Result, progress func(int64, int64)) ([][sha256.Size]byte, error) {
	fd := int(dev.Fd())
	buf := make([]byte, chunkSize)
	sums := make([][sha256.Size]byte, len(segs))
	z := zeroer{f: dev, fd: fd, w: w}
	var done int64
	var prev *segment
	for i := range segs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s := &segs[i]
		if s.data {
			b := buf[:s.n]
			if _, err := img.ReadAt(b, s.off); err != nil {
				return nil, fmt.Errorf("read image at %d: %w", s.off, err)
			}
			sums[i] = sha256.Sum256(b)
			if _, err := w.WriteAt(b, s.off); err != nil {
				return nil, err
			}
			res.Written += s.n
		} else {
			if err := z.zero(s.off, s.n); err != nil {
				return nil, fmt.Errorf("zero %d bytes at %d: %w", s.n, s.off, err)
			}
			res.Zeroed += s.n
		}
		// Start writeback of this piece, wait for the previous one and
		// drop it from the page cache.
		_ = unix.SyncFileRange(fd, s.off, s.n, unix.SYNC_FILE_RANGE_WRITE)
		if prev != nil {
			if err := unix.SyncFileRange(fd, prev.off, prev.n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil && !errors.Is(err, unix.ESPIPE) {
				return nil, fmt.Errorf("write back %d bytes at %d: %w", prev.n, prev.off, err)
			}
			_ = unix.Fadvise(fd, prev.off, prev.n, unix.FADV_DONTNEED)
		}
		prev = s
		done += s.n
		if progress != nil {
			progress(done, total)
		}
	}
	res.ZeroMethod = z.method
	return sums, nil
}

// zeroer zeroes ranges of a block device, preferring the cheapest way the
// device offers.
type zeroer struct {
	f                    *os.File
	fd                   int
	w                    io.WriterAt
	method               string // the last one that worked
	noPunch, noZeroRange bool
	zeros                []byte
}

func (z *zeroer) zero(off, n int64) error {
	if !z.noPunch {
		err := unix.Fallocate(z.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			z.method = "punch"
			return nil
		}
		if !errors.Is(err, unix.EINVAL) { // EINVAL: unaligned range, try the next way for this one only
			z.noPunch = true
		}
	}
	if !z.noZeroRange {
		err := unix.Fallocate(z.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			z.method = "zero-range"
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			z.noZeroRange = true
		}
	}
	if z.zeros == nil {
		z.zeros = make([]byte, chunkSize)
	}
	for n > 0 {
		k := min(n, int64(len(z.zeros)))
		if _, err := z.w.WriteAt(z.zeros[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	z.method = "write"
	return nil
}

// dropCache makes the verify reads come from the device.
func dropCache(f *os.File, block bool, log *slog.Logger) {
	fd := int(f.Fd())
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		log.Debug("fadvise DONTNEED", "err", err)
	}
	if block {
		if err := unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0); err != nil {
			log.Warn("could not flush the device's buffer cache (BLKFLSBUF); verification may read cached data", "err", err)
		}
	}
}

func verify(ctx context.Context, dev *os.File, segs []segment, sums [][sha256.Size]byte, res *Result, progress func(int64, int64)) error {
	var total int64
	for _, s := range segs {
		if s.data {
			total += s.n
		}
	}
	buf := make([]byte, chunkSize)
	var bad int
	var first error
	for i, s := range segs {
		if !s.data {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:s.n]
		if _, err := dev.ReadAt(b, s.off); err != nil {
			return fmt.Errorf("read back %d bytes at %d: %w", s.n, s.off, err)
		}
		if got := sha256.Sum256(b); !bytes.Equal(got[:], sums[i][:]) {
			bad++
			if first == nil {
				first = fmt.Errorf("%w: %d bytes at offset %d read back with sha256 %x, image has %x", ErrVerify, s.n, s.off, got[:8], sums[i][:8])
			}
		}
		res.Verified += s.n
		if progress != nil {
			progress(res.Verified, total)
		}
	}
	if bad > 1 {
		return fmt.Errorf("%w (and %d more pieces differ)", first, bad-1)
	}
	return first
}
