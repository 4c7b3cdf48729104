package fat16

import (
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
	size                     int64 // of the whole volume, in bytes
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
	v.size = total * bps
	return v, nil
}

// Size returns the size in bytes of the FAT16 volume vol as its boot
// sector gives it. vol may be shorter: a boot partition image without its
// trailing zero blocks still knows the partition it fills.
func Size(vol io.ReaderAt) (int64, error) {
	v, err := openVolume(vol)
	if err != nil {
		return 0, err
	}
	return v.size, nil
}

// dirEntry is a file's 8.3 directory entry.
type dirEntry struct {
	off     int64 // of the 32-byte 8.3 entry within the volume
	cluster int64
	size    int64
}

// dirent is one file or subdirectory in a directory.
type dirent struct {
	name  string // the long name, else short
	short string // the 8.3 name as NAME.EXT
	dir   bool
	dirEntry
}

// maxDirEntries is FAT's limit on the entries of one directory; it bounds
// what a corrupt chain makes readDir read.
const maxDirEntries = 65536

// readDir returns the files and subdirectories of the directory at path p:
// the fixed root directory if p is "", else the directory whose cluster
// chain starts at first. It leaves out ".", "..", volume labels and deleted
// entries.
func (v *volume) readDir(p string, first int64) ([]dirent, error) {
	type span struct{ off, n int64 }
	spans := []span{{v.rootOff, v.rootEntries * 32}}
	if p != "" {
		cs, err := v.chain(p, first)
		if err != nil {
			return nil, err
		}
		if int64(len(cs))*v.clusterBytes > maxDirEntries*32 {
			return nil, fmt.Errorf("fat16: %s: directory larger than %d entries", p, maxDirEntries)
		}
		spans = spans[:0]
		for _, c := range cs {
			spans = append(spans, span{v.clusterOff(c), v.clusterBytes})
		}
	}
	var out []dirent
	var long []uint16 // the long name collected from LFN entries
	var sum byte      // their checksum of the 8.3 name they belong to
	for _, s := range spans {
		b := make([]byte, s.n)
		if _, err := v.r.ReadAt(b, s.off); err != nil {
			return nil, fmt.Errorf("fat16: directory /%s: %w", p, err)
		}
		for i := 0; i+32 <= len(b); i += 32 {
			e := b[i : i+32]
			switch {
			case e[0] == 0: // end of directory
				return out, nil
			case e[0] == 0xe5:
				long = nil
				continue
			case e[11]&0x3f == attrLFN:
				// LFN entries precede their 8.3 entry, last part (flag
				// 0x40) first; a part out of sequence drops the name.
				var part []uint16
				for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
					for j := r[0]; j < r[1]; j += 2 {
						part = append(part, binary.LittleEndian.Uint16(e[j:]))
					}
				}
				switch {
				case e[0]&0x40 != 0:
					long, sum = part, e[13]
				case long != nil && e[13] == sum:
					long = append(part, long...)
				default:
					long = nil
				}
				continue
			}
			lfn := long
			long = nil
			if e[11]&attrVolumeID != 0 || e[0] == '.' {
				continue
			}
			d := dirent{
				short: shortString(e),
				dir:   e[11]&attrDir != 0,
				dirEntry: dirEntry{
					off:     s.off + int64(i),
					cluster: int64(binary.LittleEndian.Uint16(e[26:])),
					size:    int64(binary.LittleEndian.Uint32(e[28:])),
				},
			}
			d.name = d.short
			if lfn != nil && sum == lfnChecksum([11]byte(e[:11])) {
				d.name = lfnString(lfn)
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// lookup returns the entry of the file or directory at the slash-separated
// path name (a leading slash is allowed); each component is matched by its
// long or 8.3 name, case-insensitive.
func (v *volume) lookup(name string) (dirent, error) {
	p := strings.TrimPrefix(name, "/")
	if !fs.ValidPath(p) || p == "." {
		return dirent{}, fmt.Errorf("fat16: path %q: %w", name, fs.ErrInvalid)
	}
	parts := strings.Split(p, "/")
	var d dirent
	for i, part := range parts {
		dir := strings.Join(parts[:i], "/")
		if i > 0 && !d.dir {
			return dirent{}, fmt.Errorf("fat16: %s: %s is not a directory", name, dir)
		}
		ents, err := v.readDir(dir, d.cluster)
		if err != nil {
			return dirent{}, err
		}
		j := slices.IndexFunc(ents, func(e dirent) bool {
			return strings.EqualFold(e.name, part) || strings.EqualFold(e.short, part)
		})
		if j < 0 {
			return dirent{}, fmt.Errorf("fat16: no %s in /%s: %w", part, dir, fs.ErrNotExist)
		}
		d = ents[j]
	}
	return d, nil
}

// find returns the directory entry of the regular file at path name.
func (v *volume) find(name string) (dirEntry, error) {
	d, err := v.lookup(name)
	if err != nil {
		return dirEntry{}, err
	}
	if d.dir {
		return dirEntry{}, fmt.Errorf("fat16: %s is a directory", name)
	}
	return d.dirEntry, nil
}

// Walk calls fn for every regular file of the FAT16 volume vol, depth
// first in directory order, with its slash-separated path from the root
// ("EFI/BOOT/BOOTX64.EFI", "cmdline.txt") in the case it is stored (the
// long name if there is one) and its size. ReadFile and Rewrite take these
// paths. If fn returns an error, Walk stops and returns it; fs.SkipAll
// stops it without error. A directory that contains itself or an ancestor
// is an error.
func Walk(vol io.ReaderAt, fn func(path string, size int64) error) error {
	v, err := openVolume(vol)
	if err != nil {
		return err
	}
	seen := map[int64]bool{} // first clusters of the directories entered
	var walk func(dir string, first int64) error
	walk = func(dir string, first int64) error {
		ents, err := v.readDir(dir, first)
		if err != nil {
			return err
		}
		for _, d := range ents {
			p := d.name
			if dir != "" {
				p = dir + "/" + d.name
			}
			if !d.dir {
				if err := fn(p, d.size); err != nil {
					return err
				}
				continue
			}
			if seen[d.cluster] {
				return fmt.Errorf("fat16: %s: directory loop", p)
			}
			seen[d.cluster] = true
			if err := walk(p, d.cluster); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil && !errors.Is(err, fs.SkipAll) {
		return err
	}
	return nil
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

// ReadFile returns the regular file at the slash-separated path name of the
// FAT16 volume vol ("cmdline.txt", "/loader/entries/gokrazy.conf"); each
// component is matched by its long or 8.3 name, case-insensitive. A missing
// file is an error wrapping fs.ErrNotExist. It follows the cluster chain,
// so it also reads files another system rewrote non-contiguously; it needs
// 512-byte sectors (what New writes).
func ReadFile(vol io.ReaderAt, name string) ([]byte, error) {
	v, e, err := openEntry(vol, name)
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

// Replace gives the existing regular file at path name (as for ReadFile)
// of vol new contents without writing over its old ones: data goes into
// clusters that no file or directory of vol reaches, then the file's
// directory entry is pointed at them in one write (the switch), then its
// old clusters are freed. A power cut before the switch leaves the file
// as it was, after it the new file; the clusters a cut leaves allocated
// but unreached are taken again by the next Replace (it goes by what the
// directories reach, not by the FAT alone) or reclaimed by fsck. When vol
// has a Sync method (an *os.File), each phase is synced before the next.
// Data larger than the free clusters is refused with ErrTooLarge before
// anything is written.
func Replace(vol ReadWriterAt, name string, data []byte) error {
	w, err := openFile(vol, name)
	if err != nil {
		return err
	}
	v, e, old := w.v, w.e, w.chain
	used, err := v.reached()
	if err != nil {
		return err
	}
	need := (int64(len(data)) + v.clusterBytes - 1) / v.clusterBytes
	var cs []int64
	for c := int64(2); c < v.clusters+2 && int64(len(cs)) < need; c++ {
		if !used[c] {
			cs = append(cs, c)
		}
	}
	if int64(len(cs)) < need {
		return fmt.Errorf("%w: %s needs %d free bytes, the volume has %d", ErrTooLarge, name, need*v.clusterBytes, int64(len(cs))*v.clusterBytes)
	}
	write := w.write
	sync := func() error {
		if s, ok := vol.(interface{ Sync() error }); ok {
			if err := s.Sync(); err != nil {
				return fmt.Errorf("fat16: sync %s: %w", name, err)
			}
		}
		return nil
	}
	setFAT := w.setFAT
	rest := data
	for i, c := range cs {
		n := min(int64(len(rest)), v.clusterBytes)
		if err := write("data", rest[:n], v.clusterOff(c)); err != nil {
			return err
		}
		rest = rest[n:]
		next := uint16(0xffff)
		if i+1 < len(cs) {
			next = uint16(cs[i+1])
		}
		if err := setFAT(c, next); err != nil {
			return err
		}
	}
	if err := sync(); err != nil {
		return err
	}
	entry := make([]byte, 6)
	if len(cs) > 0 {
		binary.LittleEndian.PutUint16(entry, uint16(cs[0]))
	}
	binary.LittleEndian.PutUint32(entry[2:], uint32(len(data)))
	if err := write("directory entry", entry, e.off+26); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	for _, c := range old {
		if err := setFAT(c, 0); err != nil {
			return err
		}
	}
	return sync()
}

// reached returns the clusters that the directories of v reach: their
// own and their files'.
func (v *volume) reached() (map[int64]bool, error) {
	used := map[int64]bool{}
	mark := func(p string, first int64) error {
		cs, err := v.chain(p, first)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if used[c] {
				return fmt.Errorf("fat16: %s: cluster %d is used twice", p, c)
			}
			used[c] = true
		}
		return nil
	}
	var walk func(dir string, first int64) error
	walk = func(dir string, first int64) error {
		if dir != "" {
			if err := mark(dir, first); err != nil {
				return err
			}
		}
		ents, err := v.readDir(dir, first)
		if err != nil {
			return err
		}
		for _, d := range ents {
			p := strings.TrimPrefix(dir+"/"+d.name, "/")
			if d.dir {
				if err := walk(p, d.cluster); err != nil {
					return err
				}
				continue
			}
			if d.cluster != 0 {
				if err := mark(p, d.cluster); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	return used, nil
}

// Rewrite replaces the contents of the existing regular file at path name
// (as for ReadFile) of vol in place: data goes into the clusters the file already has, its
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
	w, err := openFile(vol, name)
	if err != nil {
		return err
	}
	v, e, cs := w.v, w.e, w.chain
	need := (int64(len(data)) + v.clusterBytes - 1) / v.clusterBytes
	if need > int64(len(cs)) {
		return fmt.Errorf("%w: %s has room for %d bytes, got %d", ErrTooLarge, name, int64(len(cs))*v.clusterBytes, len(data))
	}
	write := w.write
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
	setFAT := w.setFAT
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

// openEntry opens vol and finds the regular file at path name.
func openEntry(vol io.ReaderAt, name string) (*volume, dirEntry, error) {
	v, err := openVolume(vol)
	if err != nil {
		return nil, dirEntry{}, err
	}
	e, err := v.find(name)
	return v, e, err
}

// fileWriter changes one regular file of a volume in place.
type fileWriter struct {
	vol   ReadWriterAt
	name  string
	v     *volume
	e     dirEntry
	chain []int64 // the file's clusters
}

func openFile(vol ReadWriterAt, name string) (*fileWriter, error) {
	v, e, err := openEntry(vol, name)
	if err != nil {
		return nil, err
	}
	w := &fileWriter{vol: vol, name: name, v: v, e: e}
	if e.cluster != 0 {
		if w.chain, err = v.chain(name, e.cluster); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// write writes b at off of the volume; what names it in errors.
func (w *fileWriter) write(what string, b []byte, off int64) error {
	if _, err := w.vol.WriteAt(b, off); err != nil {
		return fmt.Errorf("fat16: write %s %s: %w", w.name, what, err)
	}
	return nil
}

// setFAT sets cluster c's entry to val in every FAT copy.
func (w *fileWriter) setFAT(c int64, val uint16) error {
	b := binary.LittleEndian.AppendUint16(nil, val)
	for f := int64(0); f < w.v.fats; f++ {
		if err := w.write("FAT", b, w.v.fatOff+f*w.v.fatBytes+c*2); err != nil {
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

// shortString renders the 8.3 name of directory entry e as NAME.EXT, in
// lower case where the entry's case flags (byte 12, which Windows and
// mtools set instead of writing a long name) say so.
func shortString(e []byte) string {
	base := strings.TrimRight(string(e[:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if e[0] == 0x05 { // a first byte of 0xe5, which marks deleted entries
		base = "\xe5" + base[1:]
	}
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}
