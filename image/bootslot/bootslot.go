// Package bootslot is the A/B layout of an appliance's boot partition:
// two complete sets of the files a kernel start needs, one per root
// partition, and the small selector files that say which set boots.
//
// Slot "a" (directory a/) belongs to root partition 2, slot "b" (b/) to
// root partition 3. Each slot holds the kernel, the board's device trees
// and cmdline.txt, whose root= names the slot's own root partition, so a
// slot is always a kernel with the root it was installed with. Outside
// the slots are the files every slot shares: the Pi firmware, the boot
// loaders, the device settings, and the selectors:
//
//   - config.txt (the Pi firmware, and image/vm's direct kernel loader):
//     its first line is os_prefix=a/ or os_prefix=b/; the Pi firmware
//     then loads the kernel, the device trees and cmdline.txt from that
//     directory;
//   - loader/entries/gokrazy.conf (systemd-boot) and syslinux.cfg
//     (SYSLINUX): the kernel path's directory and the command line, a
//     copy of the slot's cmdline.txt.
//
// Every selector is padded to a fixed length that one sector holds, so a
// selection is one in-place write of one sector per selector file: a
// power cut leaves the old selection or the new one, each a complete set.
// The updater writes a new version's kernel into the slot that is not
// selected (fat16.Replace), so the selected one is never touched.
package bootslot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/pc2/pc2/image/fat16"
)

// The slots, the file names the layout fixes, and the padded size of the
// selectors and cmdline.txt.
const (
	A = "a"
	B = "b"
	// Cmdline is each slot's kernel command line file.
	Cmdline = "cmdline.txt"
	// ConfigTxt, Entry and Syslinux are the selector files.
	ConfigTxt = "config.txt"
	Entry     = "loader/entries/gokrazy.conf"
	Syslinux  = "syslinux.cfg"
	// PadSize is the length of every selector and cmdline.txt: one
	// sector, so an edit is one write.
	PadSize = 512
)

// Selectors are the selector files a boot partition may have.
var Selectors = []string{ConfigTxt, Entry, Syslinux}

// ErrLayout is wrapped by errors about a boot partition that does not
// have the A/B layout this package describes.
var ErrLayout = errors.New("bootslot: boot partition layout")

// ErrDisagree (wrapping ErrLayout) is Selected's error when the loaders'
// selectors name different slots: a power cut fell between their writes.
// Each is whole, so Select repairs them.
var ErrDisagree = fmt.Errorf("%w: the selectors disagree", ErrLayout)

// Of returns the slot of root partition p (2 or 3).
func Of(p int) (string, error) {
	switch p {
	case 2:
		return A, nil
	case 3:
		return B, nil
	}
	return "", fmt.Errorf("bootslot: partition %d is not a root partition (2 or 3)", p)
}

// Partition returns the root partition of slot.
func Partition(slot string) (int, error) {
	switch slot {
	case A:
		return 2, nil
	case B:
		return 3, nil
	}
	return 0, fmt.Errorf("%w: %q is not a slot", ErrLayout, slot)
}

// Split returns the slot and the name within it of a boot partition path
// ("a/vmlinuz" is slot a's "vmlinuz"); ok is false outside the slots.
func Split(p string) (slot, name string, ok bool) {
	p = strings.TrimPrefix(p, "/")
	s, n, found := strings.Cut(p, "/")
	s = strings.ToLower(s)
	if !found || (s != A && s != B) {
		return "", "", false
	}
	return s, n, true
}

// IsSelector reports whether p is a selector file.
func IsSelector(p string) bool {
	p = strings.ToLower(strings.TrimPrefix(p, "/"))
	for _, s := range Selectors {
		if p == s {
			return true
		}
	}
	return false
}

// Pad pads s with spaces after its final newline to PadSize bytes.
func Pad(s string) ([]byte, error) {
	if !strings.HasSuffix(s, "\n") {
		return nil, fmt.Errorf("bootslot: %q does not end in a newline", s)
	}
	if len(s) > PadSize {
		return nil, fmt.Errorf("bootslot: %d bytes do not fit %d", len(s), PadSize)
	}
	return []byte(s + strings.Repeat(" ", PadSize-len(s))), nil
}

// NewConfigTxt returns config.txt selecting slot: os_prefix first, then
// body, padded to PadSize with a comment line (the Pi firmware's parser
// takes nothing else for granted).
func NewConfigTxt(body, slot string) ([]byte, error) {
	// The firmware takes the last os_prefix; Select edits the first.
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(l)), "os_prefix") {
			return nil, fmt.Errorf("bootslot: config.txt sets os_prefix itself: %q", l)
		}
	}
	s := "os_prefix=" + slot + "/\n" + body
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if len(s)+2 > PadSize {
		return nil, fmt.Errorf("bootslot: config.txt of %d bytes does not fit %d", len(s), PadSize)
	}
	return []byte(s + "#" + strings.Repeat(" ", PadSize-len(s)-2) + "\n"), nil
}

// line is a selector line that names the slot: its key (matched
// case-insensitively, the value after it) and what the value looks like.
type line struct {
	file, key string
}

// slotOf returns the slot a selector line's value names: "a/" for
// config.txt, "/a/vmlinuz" for the loaders.
func slotOf(l line, value string) (string, bool) {
	v := strings.TrimPrefix(value, "/")
	s, _, ok := strings.Cut(v, "/")
	if !ok || (s != A && s != B) {
		return "", false
	}
	if l.file == ConfigTxt && v != s+"/" {
		return "", false
	}
	return s, true
}

var lines = map[string]line{
	ConfigTxt: {ConfigTxt, "os_prefix="},
	Entry:     {Entry, "linux "},
	Syslinux:  {Syslinux, "LINUX "},
}

// fields splits data into lines ending in '\n' or '\r' and returns the
// start and end of each.
func fields(data []byte) [][2]int {
	var out [][2]int
	start := 0
	for i, c := range data {
		if c == '\n' || c == '\r' {
			out = append(out, [2]int{start, i})
			start = i + 1
		}
	}
	return out
}

// find returns the bounds of the line of data that starts with key.
func find(data []byte, key string) (int, int, bool) {
	for _, f := range fields(data) {
		if len(data[f[0]:f[1]]) >= len(key) && strings.EqualFold(string(data[f[0]:f[0]+len(key)]), key) {
			return f[0], f[1], true
		}
	}
	return 0, 0, false
}

// selected returns the slot a selector file names.
func selected(name string, data []byte) (string, error) {
	l := lines[name]
	s, e, ok := find(data, l.key)
	if !ok {
		return "", fmt.Errorf("%w: %s has no %s line", ErrLayout, name, strings.TrimSpace(l.key))
	}
	slot, ok := slotOf(l, strings.TrimSpace(string(data[s+len(l.key):e])))
	if !ok {
		return "", fmt.Errorf("%w: %s: %q names no slot", ErrLayout, name, data[s:e])
	}
	return slot, nil
}

// readSelectors returns the selector files vol has: config.txt, or the
// loader entry (and syslinux.cfg when there is one).
func readSelectors(vol io.ReaderAt) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, n := range Selectors {
		b, err := fat16.ReadFile(vol, n)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrLayout, err)
		}
		out[n] = b
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no config.txt and no loader entry: not an A/B boot partition", ErrLayout)
	}
	return out, nil
}

// Selected returns the slot vol boots. Its selectors must agree.
func Selected(vol io.ReaderAt) (string, error) {
	sel, err := readSelectors(vol)
	if err != nil {
		return "", err
	}
	slot := ""
	for _, n := range Selectors {
		b, ok := sel[n]
		if !ok {
			continue
		}
		s, err := selected(n, b)
		if err != nil {
			return "", err
		}
		if slot != "" && s != slot {
			return "", fmt.Errorf("%w (%s names slot %s)", ErrDisagree, n, s)
		}
		slot = s
	}
	return slot, nil
}

// ReadCmdline returns the kernel command line of slot on vol: the first
// line of its cmdline.txt.
func ReadCmdline(vol io.ReaderAt, slot string) (string, error) {
	b, err := fat16.ReadFile(vol, path.Join(slot, Cmdline))
	if err != nil {
		return "", fmt.Errorf("%w: slot %s: %v", ErrLayout, slot, err)
	}
	first, _, ok := bytes.Cut(b, []byte("\n"))
	if !ok || len(bytes.TrimSpace(first)) == 0 {
		return "", fmt.Errorf("%w: slot %s: cmdline.txt has no command line", ErrLayout, slot)
	}
	return strings.TrimSpace(string(first)), nil
}

// Selection returns a selector file's data selecting slot, whose kernel
// command line is cmdline (the loaders' copy of it), at data's length.
func Selection(name string, data []byte, slot, cmdline string) ([]byte, error) {
	l, ok := lines[name]
	if !ok {
		return nil, fmt.Errorf("bootslot: %s is not a selector", name)
	}
	s, e, ok := find(data, l.key)
	if !ok {
		return nil, fmt.Errorf("%w: %s has no %s line", ErrLayout, name, strings.TrimSpace(l.key))
	}
	value := strings.TrimSpace(string(data[s+len(l.key) : e]))
	if _, ok := slotOf(l, value); !ok {
		return nil, fmt.Errorf("%w: %s: %q names no slot", ErrLayout, name, data[s:e])
	}
	type edit struct {
		start, end int
		text       string
	}
	// The kernel path keeps its file name; only the directory changes.
	edits := []edit{{s, e, l.key + "/" + slot + "/" + path.Base(value)}}
	if name == ConfigTxt {
		edits[0].text = l.key + slot + "/"
	} else {
		key := "options "
		if name == Syslinux {
			key = "APPEND "
		}
		optStart, optEnd, ok := find(data, key)
		if !ok {
			return nil, fmt.Errorf("%w: %s has no %s line", ErrLayout, name, strings.TrimSpace(key))
		}
		edits = append(edits, edit{optStart, optEnd, key + cmdline})
		slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	}
	out := make([]byte, 0, len(data))
	pos := 0
	for _, ed := range edits {
		out = append(out, data[pos:ed.start]...)
		out = append(out, ed.text...)
		pos = ed.end
	}
	// The rest up to the final newline; then the padding.
	last := bytes.LastIndexByte(data, '\n')
	if last < pos {
		return nil, fmt.Errorf("%w: %s does not end in a newline", ErrLayout, name)
	}
	out = append(out, data[pos:last+1]...)
	if len(out) > len(data) {
		return nil, fmt.Errorf("%w: %s selecting slot %s does not fit its %d bytes", ErrLayout, name, slot, len(data))
	}
	return append(out, bytes.Repeat([]byte(" "), len(data)-len(out))...), nil
}

// Select makes vol boot slot: each selector file is rewritten in place at
// its length (one sector), the loaders' ones with the slot's command
// line. A file that already selects slot is not written.
func Select(vol fat16.ReadWriterAt, slot string) error {
	if _, err := Partition(slot); err != nil {
		return err
	}
	sel, err := readSelectors(vol)
	if err != nil {
		return err
	}
	cmdline := ""
	if _, ok := sel[ConfigTxt]; !ok || len(sel) > 1 {
		if cmdline, err = ReadCmdline(vol, slot); err != nil {
			return err
		}
	}
	// Every selector's new contents first: a selector that cannot name
	// the slot leaves all of them as they were.
	var writes []string
	next := map[string][]byte{}
	for _, n := range Selectors {
		b, ok := sel[n]
		if !ok {
			continue
		}
		nb, err := Selection(n, b, slot, cmdline)
		if err != nil {
			return err
		}
		if !bytes.Equal(nb, b) {
			writes = append(writes, n)
			next[n] = nb
		}
	}
	for _, n := range writes {
		if err := fat16.Rewrite(vol, n, next[n]); err != nil {
			return fmt.Errorf("bootslot: select slot %s: %s: %w", slot, n, err)
		}
	}
	return nil
}

// RootPartition returns the partition number (2 or 3) a root= field
// names: the GPT form root=PARTUUID=<p1 GUID>/PARTNROFF=1|2 or the MBR
// form root=PARTUUID=<signature>-02|03 that image.Build writes.
func RootPartition(field string) (int, error) {
	v := strings.TrimPrefix(field, "root=PARTUUID=")
	if v == field {
		return 0, fmt.Errorf("%w: %q is not a root=PARTUUID= field", ErrLayout, field)
	}
	if _, off, ok := strings.Cut(v, "/PARTNROFF="); ok {
		n, err := strconv.Atoi(off)
		if err != nil || n < 1 || n > 2 {
			return 0, fmt.Errorf("%w: %q names no root partition", ErrLayout, field)
		}
		return n + 1, nil
	}
	if i := strings.LastIndexByte(v, '-'); i > 0 {
		n, err := strconv.ParseUint(v[i+1:], 16, 8)
		if err == nil && len(v[i+1:]) == 2 && (n == 2 || n == 3) {
			return int(n), nil
		}
	}
	return 0, fmt.Errorf("%w: %q names no root partition", ErrLayout, field)
}

// WithPartition returns the root= field naming partition p instead.
func WithPartition(field string, p int) (string, error) {
	if _, err := RootPartition(field); err != nil {
		return "", err
	}
	if p != 2 && p != 3 {
		return "", fmt.Errorf("bootslot: partition %d is not a root partition (2 or 3)", p)
	}
	if i := strings.Index(field, "/PARTNROFF="); i >= 0 {
		return field[:i] + "/PARTNROFF=" + strconv.Itoa(p-1), nil
	}
	return field[:len(field)-2] + fmt.Sprintf("%02x", p), nil
}
