package fat16

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
)

// ReadFile returns a file from the root directory of the FAT16 volume vol,
// by its long or 8.3 name (case-insensitive). It follows the cluster chain,
// so it also reads files another system rewrote non-contiguously; it needs
// 512-byte sectors (what New writes).
func ReadFile(vol io.ReaderAt, name string) ([]byte, error) {
	bs := make([]byte, 512)
	if _, err := vol.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	le16 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) }
	bps, spc := le16(bs[11:]), int64(bs[13])
	reserved, fats, rootEntries, fatSectors := le16(bs[14:]), int64(bs[16]), le16(bs[17:]), le16(bs[22:])
	if bps != 512 || spc == 0 || fats == 0 || fatSectors == 0 || string(bs[54:59]) != "FAT16" {
		return nil, errors.New("fat16: not a FAT16 file system with 512-byte sectors")
	}
	fatOff := reserved * bps
	rootOff := fatOff + fats*fatSectors*bps
	dataOff := rootOff + rootEntries*32
	root := make([]byte, rootEntries*32)
	if _, err := vol.ReadAt(root, rootOff); err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	want := shortName83(name)
	var long []uint16 // the long name collected from LFN entries
	for e := root; len(e) >= 32; e = e[32:] {
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
		cluster, size := le16(e[26:]), int64(binary.LittleEndian.Uint32(e[28:]))
		out := make([]byte, 0, size)
		cb := spc * bps
		fat := make([]byte, 2)
		for int64(len(out)) < size {
			if cluster < 2 || cluster >= 0xfff0 {
				return nil, fmt.Errorf("fat16: %s: broken cluster chain", name)
			}
			buf := make([]byte, min(cb, size-int64(len(out))))
			if _, err := vol.ReadAt(buf, dataOff+(cluster-2)*cb); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			out = append(out, buf...)
			if _, err := vol.ReadAt(fat, fatOff+cluster*2); err != nil {
				return nil, fmt.Errorf("%s: FAT: %w", name, err)
			}
			cluster = le16(fat)
		}
		return out, nil
	}
	return nil, fmt.Errorf("fat16: no %s in the root directory", name)
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
