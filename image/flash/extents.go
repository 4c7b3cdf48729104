//go:build linux

package flash

import (
	"errors"
	"io"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// extent is a byte range [off, off+n).
type extent struct{ off, n int64 }

// dataExtents returns the ranges of f (of the given size) that hold data,
// in order. A file system without SEEK_DATA yields the whole file.
func dataExtents(f *os.File, size int64) ([]extent, error) {
	var out []extent
	for off := int64(0); off < size; {
		d, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // no data after off
			break
		}
		if errors.Is(err, unix.EINVAL) && off == 0 {
			return []extent{{0, size}}, nil
		}
		if err != nil {
			return nil, err
		}
		if d >= size {
			break
		}
		h, err := f.Seek(d, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, size)
		out = append(out, extent{d, h - d})
		off = h
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return out, nil
}

// clip cuts exts at limit.
func clip(exts []extent, limit int64) []extent {
	var out []extent
	for _, e := range exts {
		if e.off >= limit {
			break
		}
		e.n = min(e.n, limit-e.off)
		out = append(out, e)
	}
	return out
}

// complement returns the gaps between exts within [0, limit).
func complement(exts []extent, limit int64) []extent {
	var out []extent
	var pos int64
	for _, e := range clip(exts, limit) {
		if e.off > pos {
			out = append(out, extent{pos, e.off - pos})
		}
		pos = e.off + e.n
	}
	if pos < limit {
		out = append(out, extent{pos, limit - pos})
	}
	return out
}

// chunks splits exts at every chunkSize boundary, so pieces are at most
// chunkSize and, past their first, aligned to it.
func chunks(exts []extent) []extent {
	var out []extent
	for _, e := range exts {
		for e.n > 0 {
			k := min(e.n, (e.off/chunkSize+1)*chunkSize-e.off)
			out = append(out, extent{e.off, k})
			e.off += k
			e.n -= k
		}
	}
	return out
}

func sortSegments(s []segment) {
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
}
