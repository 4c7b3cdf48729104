// Package fat16 writes FAT16 file systems for the appliance's boot partition.
//
// Why FAT16 and not FAT32 (which github.com/diskfs/go-diskfs writes): the
// appliance changes its boot partition in place on the device, without
// mounting it (A/B slot switches, settings, an update's boot files), and
// this package's readers and writers, like gokrazy's own FAT reader (which
// its init still uses to look for its test-boot flag), understand only
// FAT16: a fixed root directory and 16-bit cluster numbers. UEFI firmware
// reads FAT16 as well as FAT32. gokrazy's reader also assumes a single FAT
// (it skips the FAT count when computing where the root directory
// starts), so this writer writes one.

// The writer is deliberately small: regular files and directories only,
// every file contiguous, 8.3 short names plus VFAT long names (needed for
// "gokrazy.conf", whose extension is four characters), one timestamp for all
// entries, and entries sorted by name, so the same input gives the same bytes.
//
// The reader (ReadFile, Rewrite, Replace, Walk, Size) takes any FAT16 volume with
// 512-byte sectors, files in any directory and in any cluster order, so it
// also works after another system (mtools, the firmware, gokrazy) changed it.
package fat16

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

const (
	sectorSize      = 512
	reservedSectors = 4
	// One FAT: gokrazy's reader locates the root directory at
	// reserved + one FAT's sectors, ignoring the FAT count field.
	numFATs     = 1
	rootEntries = 512 // 32 sectors, the usual FAT16 value
	minClusters = 4085
	maxClusters = 65524

	attrVolumeID = 0x08
	attrDir      = 0x10
	attrArchive  = 0x20
	attrLFN      = 0x0f
)

// Options configure New.
type Options struct {
	// Size of the file system in bytes, a multiple of 512.
	Size int64
	// Label is the volume label, at most 11 characters.
	Label string
	// VolumeID is the volume serial number.
	VolumeID uint32
	// HiddenSectors is the partition's first LBA, recorded in the boot sector
	// for firmware that needs it.
	HiddenSectors uint32
	// ModTime is the timestamp of every entry (clamped to 1980..2107).
	ModTime time.Time
}

// ErrTooLarge is returned when the files do not fit.
var ErrTooLarge = errors.New("fat16: files do not fit")

// Extent is where a file's bytes lie within the file system image.
type Extent struct{ Offset, Length int64 }

// FS is a FAT16 image being built in memory.
type FS struct {
	opts  Options
	files map[string][]byte // slash-separated paths without leading slash
}

// New returns an empty file system.
func New(opts Options) *FS {
	return &FS{opts: opts, files: map[string][]byte{}}
}

// Add adds a regular file; parent directories are created implicitly.
func (fs *FS) Add(name string, data []byte) {
	fs.files[strings.TrimPrefix(path.Clean("/"+name), "/")] = data
}

type node struct {
	name     string
	data     []byte
	isDir    bool
	children []*node
	cluster  uint16
	clusters int
	short    [11]byte
}

type geometry struct {
	spc        int // sectors per cluster
	fatSectors int
	clusters   int
	total      int
}

func (g geometry) rootDirSector() int { return reservedSectors + numFATs*g.fatSectors }
func (g geometry) dataSector() int    { return g.rootDirSector() + rootEntries*32/sectorSize }
func (g geometry) clusterBytes() int  { return g.spc * sectorSize }

func computeGeometry(size int64) (geometry, error) {
	total := int(size / sectorSize)
	for spc := 1; spc <= 128; spc *= 2 {
		g := geometry{spc: spc, total: total}
		// Iterate: the FAT size depends on the cluster count and vice versa.
		for i := 0; i < 4; i++ {
			g.clusters = (total - reservedSectors - rootEntries*32/sectorSize - numFATs*g.fatSectors) / spc
			g.fatSectors = ((g.clusters+2)*2 + sectorSize - 1) / sectorSize
		}
		g.clusters = (total - g.dataSector()) / spc
		if g.clusters > maxClusters {
			continue
		}
		if g.clusters < minClusters {
			return g, fmt.Errorf("fat16: %d bytes is too small for FAT16", size)
		}
		return g, nil
	}
	return geometry{}, fmt.Errorf("fat16: %d bytes is too large for FAT16", size)
}

// Bytes lays out the file system and returns its image and the extent of
// every file, keyed by path with a leading slash.
func (fs *FS) Bytes() ([]byte, map[string]Extent, error) {
	if fs.opts.Size%sectorSize != 0 {
		return nil, nil, fmt.Errorf("fat16: size %d is not a multiple of %d", fs.opts.Size, sectorSize)
	}
	g, err := computeGeometry(fs.opts.Size)
	if err != nil {
		return nil, nil, err
	}
	root := fs.tree()

	// Allocate clusters depth first in name order: directories before the
	// next sibling's contents, every file in one contiguous run.
	next := 2
	var alloc func(n *node)
	alloc = func(n *node) {
		for _, c := range n.children {
			size := len(c.data)
			if c.isDir {
				size = dirEntryCount(c) * 32
			}
			c.clusters = (size + g.clusterBytes() - 1) / g.clusterBytes()
			if c.clusters > 0 {
				c.cluster = uint16(next)
				next += c.clusters
			}
		}
		for _, c := range n.children {
			if c.isDir {
				alloc(c)
			}
		}
	}
	alloc(root)
	if next-2 > g.clusters {
		return nil, nil, fmt.Errorf("%w: need %d clusters, have %d", ErrTooLarge, next-2, g.clusters)
	}
	if dirEntryCount(root) > rootEntries {
		return nil, nil, fmt.Errorf("%w: more than %d root directory entries", ErrTooLarge, rootEntries)
	}

	img := make([]byte, fs.opts.Size)
	fs.writeBootSector(img, g)

	fat := make([]byte, g.fatSectors*sectorSize)
	binary.LittleEndian.PutUint16(fat[0:], 0xfff8)
	binary.LittleEndian.PutUint16(fat[2:], 0xffff)
	extents := map[string]Extent{}
	clusterOff := func(c uint16) int { return (g.dataSector() + (int(c)-2)*g.spc) * sectorSize }

	var write func(n *node, dir string)
	write = func(n *node, dir string) {
		for _, c := range n.children {
			for i := 0; i < c.clusters; i++ {
				v := uint16(int(c.cluster) + i + 1)
				if i == c.clusters-1 {
					v = 0xffff
				}
				binary.LittleEndian.PutUint16(fat[(int(c.cluster)+i)*2:], v)
			}
			p := dir + "/" + c.name
			if c.isDir {
				entries := fs.dirEntries(c, n)
				copy(img[clusterOff(c.cluster):], entries)
				write(c, p)
				continue
			}
			if c.clusters > 0 {
				copy(img[clusterOff(c.cluster):], c.data)
				extents[p] = Extent{int64(clusterOff(c.cluster)), int64(len(c.data))}
			} else {
				extents[p] = Extent{0, 0}
			}
		}
	}
	write(root, "")
	copy(img[g.rootDirSector()*sectorSize:], fs.dirEntries(root, nil))
	for i := 0; i < numFATs; i++ {
		copy(img[(reservedSectors+i*g.fatSectors)*sectorSize:], fat)
	}
	return img, extents, nil
}

func (fs *FS) tree() *node {
	root := &node{isDir: true}
	dirs := map[string]*node{"": root}
	var mkdir func(p string) *node
	mkdir = func(p string) *node {
		if d, ok := dirs[p]; ok {
			return d
		}
		parent := mkdir(dirOf(p))
		d := &node{name: path.Base(p), isDir: true}
		parent.children = append(parent.children, d)
		dirs[p] = d
		return d
	}
	names := make([]string, 0, len(fs.files))
	for n := range fs.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parent := mkdir(dirOf(n))
		parent.children = append(parent.children, &node{name: path.Base(n), data: fs.files[n]})
	}
	var sortRec func(n *node)
	sortRec = func(n *node) {
		sort.Slice(n.children, func(i, j int) bool { return n.children[i].name < n.children[j].name })
		seen := map[string]bool{}
		for _, c := range n.children {
			c.short = shortName(c.name, seen)
			if c.isDir {
				sortRec(c)
			}
		}
	}
	sortRec(root)
	return root
}

func dirOf(p string) string {
	d := path.Dir(p)
	if d == "." {
		return ""
	}
	return d
}

// dirEntryCount is the number of 32-byte entries directory n needs.
func dirEntryCount(n *node) int {
	count := 1 // the root's volume label, or a subdirectory's "."
	if n.name != "" {
		count = 2 // "." and ".."
	}
	for _, c := range n.children {
		count++
		if needsLFN(c.name, c.short) {
			count += (len(utf16.Encode([]rune(c.name))) + 12) / 13
		}
	}
	return count
}

func (fs *FS) dirEntries(n, parent *node) []byte {
	var b []byte
	t, d := fatTime(fs.opts.ModTime)
	entry := func(short [11]byte, attr byte, cluster uint16, size uint32) {
		e := make([]byte, 32)
		copy(e[0:11], short[:])
		e[11] = attr
		binary.LittleEndian.PutUint16(e[14:], t) // creation time
		binary.LittleEndian.PutUint16(e[16:], d) // creation date
		binary.LittleEndian.PutUint16(e[18:], d) // access date
		binary.LittleEndian.PutUint16(e[22:], t)
		binary.LittleEndian.PutUint16(e[24:], d)
		binary.LittleEndian.PutUint16(e[26:], cluster)
		binary.LittleEndian.PutUint32(e[28:], size)
		b = append(b, e...)
	}
	if n.name == "" {
		// fsck.fat expects the boot sector's label in the root as well.
		var label [11]byte
		copy(label[:], fmt.Sprintf("%-11.11s", fs.label()))
		entry(label, attrVolumeID, 0, 0)
	} else {
		var dot, dotdot [11]byte
		copy(dot[:], ".          ")
		copy(dotdot[:], "..         ")
		entry(dot, attrDir, n.cluster, 0)
		pc := uint16(0) // the root directory is cluster 0 in ".."
		if parent != nil && parent.name != "" {
			pc = parent.cluster
		}
		entry(dotdot, attrDir, pc, 0)
	}
	for _, c := range n.children {
		if needsLFN(c.name, c.short) {
			b = append(b, lfnEntries(c.name, c.short)...)
		}
		if c.isDir {
			entry(c.short, attrDir, c.cluster, 0)
		} else {
			entry(c.short, attrArchive, c.cluster, uint32(len(c.data)))
		}
	}
	return b
}

func (fs *FS) writeBootSector(img []byte, g geometry) {
	bs := img[:sectorSize]
	copy(bs[0:], []byte{0xeb, 0x3c, 0x90}) // jump over the BPB
	copy(bs[3:11], "PC2     ")
	binary.LittleEndian.PutUint16(bs[11:], sectorSize)
	bs[13] = byte(g.spc)
	binary.LittleEndian.PutUint16(bs[14:], reservedSectors)
	bs[16] = numFATs
	binary.LittleEndian.PutUint16(bs[17:], rootEntries)
	if g.total < 0x10000 {
		binary.LittleEndian.PutUint16(bs[19:], uint16(g.total))
	} else {
		binary.LittleEndian.PutUint32(bs[32:], uint32(g.total))
	}
	bs[21] = 0xf8 // fixed disk
	binary.LittleEndian.PutUint16(bs[22:], uint16(g.fatSectors))
	binary.LittleEndian.PutUint16(bs[24:], 63) // sectors per track
	binary.LittleEndian.PutUint16(bs[26:], 255)
	binary.LittleEndian.PutUint32(bs[28:], fs.opts.HiddenSectors)
	bs[36] = 0x80 // drive number
	bs[38] = 0x29 // extended boot signature: the next three fields are valid
	binary.LittleEndian.PutUint32(bs[39:], fs.opts.VolumeID)
	copy(bs[43:54], fmt.Sprintf("%-11.11s", fs.label()))
	copy(bs[54:62], "FAT16   ")
	bs[510], bs[511] = 0x55, 0xaa
}

func (fs *FS) label() string {
	if fs.opts.Label == "" {
		return "NO NAME"
	}
	return strings.ToUpper(fs.opts.Label)
}

// fatTime encodes t in FAT's local-time format (we use UTC).
func fatTime(t time.Time) (tm, date uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	return tm, date
}

const shortChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~"

// shortName derives the 8.3 name the way Windows does: upper case, invalid
// characters replaced, and a numeric tail (~1, ~2, ...) when information was
// lost. gokrazy's reader relies on exactly this scheme to find gokrazy.conf.
func shortName(name string, seen map[string]bool) [11]byte {
	upper := strings.ToUpper(strings.ReplaceAll(name, " ", ""))
	lossy := upper != strings.ToUpper(name)
	upper = strings.TrimLeft(upper, ".")
	base, ext := upper, ""
	if i := strings.LastIndex(upper, "."); i >= 0 {
		base, ext = upper[:i], upper[i+1:]
	}
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			if strings.ContainsRune(shortChars, r) {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
				lossy = true
			}
		}
		return b.String()
	}
	base, ext = clean(strings.ReplaceAll(base, ".", "")), clean(ext)
	if strings.Count(upper, ".") > 1 {
		lossy = true
	}
	if len(base) > 8 {
		base, lossy = base[:8], true
	}
	if len(ext) > 3 {
		ext, lossy = ext[:3], true
	}
	cand := base
	if lossy {
		for n := 1; ; n++ {
			tail := "~" + strconv.Itoa(n)
			b := base
			if len(b)+len(tail) > 8 {
				b = b[:8-len(tail)]
			}
			cand = b + tail
			if !seen[cand+"."+ext] {
				break
			}
		}
	}
	seen[cand+"."+ext] = true
	var out [11]byte
	copy(out[:], fmt.Sprintf("%-8s%-3s", cand, ext))
	return out
}

// needsLFN reports whether name cannot be represented by its short name
// alone (including lower case, which would otherwise read back upper case).
func needsLFN(name string, short [11]byte) bool {
	base := strings.TrimRight(string(short[:8]), " ")
	ext := strings.TrimRight(string(short[8:]), " ")
	s := base
	if ext != "" {
		s += "." + ext
	}
	return s != name
}

func lfnChecksum(short [11]byte) byte {
	var sum byte
	for _, c := range short {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// lfnEntries returns the VFAT long name entries for name, last part first as
// they precede the short entry on disk.
func lfnEntries(name string, short [11]byte) []byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + 12) / 13
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0
		default:
			padded[i] = 0xffff
		}
	}
	sum := lfnChecksum(short)
	var b []byte
	for seq := n; seq >= 1; seq-- {
		e := make([]byte, 32)
		e[0] = byte(seq)
		if seq == n {
			e[0] |= 0x40
		}
		e[11] = attrLFN
		e[13] = sum
		chunk := padded[(seq-1)*13 : seq*13]
		for i, off := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
			binary.LittleEndian.PutUint16(e[off:], chunk[i])
		}
		b = append(b, e...)
	}
	return b
}
