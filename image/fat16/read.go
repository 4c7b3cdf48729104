package fat16

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"unicode/utf16"
)

// volume is an existing FAT16 file system's layout, from its boot sector.
type volume struct {
	r                        io.ReaderAt
	fatOff, rootOff, dataOff int64
	rootEntries              int64
	fats, fatBytes           int64
	clusterBytes             int64
	clusters                 int64
}

func openVolume(r io.ReaderAt) (*volume, error) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	le16 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) }
	bps, spc := le16(bs[11:]), int64(bs[13])
	reserved, fats, rootEntries, fatSectors := le16(bs[14:]), int64(bs[16]), le16(bs[17:]), le16(bs[22:])
	if bps != 512 || spc == 0 || fats == 0 || fatSectors == 0 || string(bs[54:59]) != "FAT16" {
		return nil, errors.New("fat16: not a FAT16 file system with 512-byte sectors")
	}
	total := le16(bs[19:])
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	v := &volume{r: r, rootEntries: rootEntries, clusterBytes: spc * bps, fats: fats, fatBytes: fatSectors * bps}
	v.fatOff = reserved * bps
	v.rootOff = v.fatOff + fats*fatSectors*bps
	v.dataOff = v.rootOff + rootEntries*32
	v.clusters = (total*bps - v.dataOff) / v.clusterBytes
	return v, nil
}

// dirEntry is a file's entry in the root directory.
type dirEntry struct {
	off     int64 // of the 32-byte 8.3 entry within the volume
	cluster int64
	size    int64
}

// find returns the root directory entry of the regular file name (long or
// 8.3 name, case-insensitive).
func (v *volume) find(name string) (dirEntry, error) {
	root := make([]byte, v.rootEntries*32)
	if _, err := v.r.ReadAt(root, v.rootOff); err != nil {
		return dirEntry{}, fmt.Errorf("root directory: %w", err)
	}
	want := shortName83(name)
	var long []uint16 // the long name collected from LFN entries
	for i := 0; i+32 <= len(root); i += 32 {
		e := root[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xe5 {
			long = nil
			continue
		}
		if e[11] == 0x0f { // LFN entries precede their 8.3 entry, last part first
			var part []uint16
			for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
				for i := r[0]; i < r[1]; i += 2 {
					part = append(part, binary.LittleEndian.Uint16(e[i:]))
				}
			}
			long = append(part, long...)
			continue
		}
		lfn := long
		long = nil
		if e[11]&0x18 != 0 { // volume label, directory
			continue
		}
		if !bytes.Equal(e[:11], want[:]) && !strings.EqualFold(lfnString(lfn), name) {
			continue
		}
		return dirEntry{
			off:     v.rootOff + int64(i),
			cluster: int64(binary.LittleEndian.Uint16(e[26:])),
			size:    int64(binary.LittleEndian.Uint32(e[28:])),
		}, nil
	}
	return dirEntry{}, fmt.Errorf("fat16: no %s in the root directory: %w", name, fs.ErrNotExist)
}

// chain returns the clusters of the file starting at first, following the
// FAT until its end-of-chain mark; a chain that loops, leaves the volume or
// ends early is an error.
func (v *volume) chain(name string, first int64) ([]int64, error) {
	var cs []int64
	fat := make([]byte, 2)
	for c := first; c < 0xfff8; {
		if c < 2 || c >= v.clusters+2 || int64(len(cs)) > v.clusters {
			return nil, fmt.Errorf("fat16: %s: broken cluster chain", name)
		}
		cs = append(cs, c)
		if _, err := v.r.ReadAt(fat, v.fatOff+c*2); err != nil {
			return nil, fmt.Errorf("%s: FAT: %w", name, err)
		}
		c = int64(binary.LittleEndian.Uint16(fat))
	}
	return cs, nil
}

func (v *volume) clusterOff(c int64) int64 { return v.dataOff + (c-2)*v.clusterBytes }

// ReadFile returns a file from the root directory of the FAT16 volume vol,
// by its long or 8.3 name (case-insensitive). It follows the cluster chain,
// so it also reads files another system rewrote non-contiguously; it needs
// 512-byte sectors (what New writes).
func ReadFile(vol io.ReaderAt, name string) ([]byte, error) {
	v, err := openVolume(vol)
	if err != nil {
		return nil, err
	}
	e, err := v.find(name)
	if err != nil {
		return nil, err
	}
	if e.size == 0 {
		return []byte{}, nil
	}
	cs, err := v.chain(name, e.cluster)
	if err != nil {
		return nil, err
	}
	if int64(len(cs))*v.clusterBytes < e.size {
		return nil, fmt.Errorf("fat16: %s: cluster chain shorter than the file", name)
	}
	out := make([]byte, 0, e.size)
	for _, c := range cs {
		n := min(v.clusterBytes, e.size-int64(len(out)))
		if n <= 0 {
			break
		}
		buf := make([]byte, n)
		if _, err := vol.ReadAt(buf, v.clusterOff(c)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, buf...)
	}
	return out, nil
}

// ReadWriterAt is a volume Rewrite can change.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Rewrite replaces the contents of an existing file in the root directory of
// vol in place: data goes into the clusters the file already has, its
// directory entry gets the new length, and clusters it no longer needs are
// freed. A file can only grow within the clusters it has; reserve room when
// creating it (image.Build pads the settings file). Larger data is refused
// with ErrTooLarge before anything is written.
//
// Data is written first, then the directory entry, then the FAT. A power
// cut in between leaves the old length over partly new bytes (or lost
// clusters that fsck reclaims); callers that care keep the length
// unchanged (padding), so only the data is ever written.
func Rewrite(vol ReadWriterAt, name string, data []byte) error {
	v, err := openVolume(vol)
	if err != nil {
		return err
	}
	e, err := v.find(name)
	if err != nil {
		return err
	}
	var cs []int64
	if e.cluster != 0 {
		if cs, err = v.chain(name, e.cluster); err != nil {
			return err
		}
	}
	need := (int64(len(data)) + v.clusterBytes - 1) / v.clusterBytes
	if need > int64(len(cs)) {
		return fmt.Errorf("%w: %s has room for %d bytes, got %d", ErrTooLarge, name, int64(len(cs))*v.clusterBytes, len(data))
	}
	write := func(what string, b []byte, off int64) error {
		if _, err := vol.WriteAt(b, off); err != nil {
			return fmt.Errorf("fat16: write %s %s: %w", name, what, err)
		}
		return nil
	}
	rest := data
	for _, c := range cs[:need] {
		n := min(int64(len(rest)), v.clusterBytes)
		if err := write("data", rest[:n], v.clusterOff(c)); err != nil {
			return err
		}
		rest = rest[n:]
	}
	if int64(len(data)) == e.size {
		return nil
	}
	entry := make([]byte, 6)
	first := uint16(0)
	if need > 0 {
		first = uint16(cs[0])
	}
	binary.LittleEndian.PutUint16(entry, first)
	binary.LittleEndian.PutUint32(entry[2:], uint32(len(data)))
	if err := write("directory entry", entry, e.off+26); err != nil {
		return err
	}
	// Free the clusters past the new end, in every FAT copy.
	setFAT := func(c int64, val uint16) error {
		b := binary.LittleEndian.AppendUint16(nil, val)
		for f := int64(0); f < v.fats; f++ {
			if err := write("FAT", b, v.fatOff+f*v.fatBytes+c*2); err != nil {
				return err
			}
		}
		return nil
	}
	if need > 0 && need < int64(len(cs)) {
		if err := setFAT(cs[need-1], 0xffff); err != nil {
			return err
		}
	}
	for _, c := range cs[need:] {
		if err := setFAT(c, 0); err != nil {
			return err
		}
	}
	return nil
}

// lfnString decodes a long name up to its NUL terminator.
func lfnString(u []uint16) string {
	if i := slices.Index(u, 0); i >= 0 {
		u = u[:i]
	}
	return string(utf16.Decode(u))
}

// shortName83 is name's 8.3 directory entry form ("cmdline.txt" ->
// "CMDLINE TXT").
func shortName83(name string) [11]byte {
	var s [11]byte
	for i := range s {
		s[i] = ' '
	}
	base, ext, _ := strings.Cut(strings.ToUpper(name), ".")
	copy(s[:8], base)
	copy(s[8:], ext)
	return s
}
