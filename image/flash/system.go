//go:build linux

package flash

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what a target path is.
type Kind int

const (
	// Missing: the path does not exist; Flash creates a regular file.
	Missing Kind = iota
	// File: an existing regular file, replaced by the image.
	File
	// BlockDevice: a disk, SD card or loop device.
	BlockDevice
	// Other: anything else (directory, character device, ...); refused.
	Other
)

// Target is what flashing a path would overwrite, as Describe found it in
// /proc, /sys and /dev.
type Target struct {
	Path string
	Kind Kind
	// Size in bytes: the file's or the device's (from /sys).
	Size int64

	// The rest is for block devices.
	Name      string // kernel name, "sdb"
	Dev       string // "major:minor"
	Vendor    string
	Model     string
	Removable bool
	// Disk is set when Name is a partition: the disk it belongs to.
	Disk       string
	Partitions []Partition
	// InUse says, one reason each, why the device is busy: mounted
	// partitions, swap, device-mapper or md holders.
	InUse []string
	// RootDisk is set when the running system's root file system lives on
	// this disk; it says how ("/ is /dev/sda2").
	RootDisk string

	info os.FileInfo // of a regular file, to recognise the image
}

// Partition is an existing partition of a target disk.
type Partition struct {
	Name   string // "sdb1"
	Size   int64
	FSType string // from blkid, if installed
	Label  string // from blkid, if installed
}

// String is the summary the CLI prints before asking for confirmation.
func (t *Target) String() string {
	var b strings.Builder
	switch t.Kind {
	case Missing:
		fmt.Fprintf(&b, "%s: new file", t.Path)
	case File:
		fmt.Fprintf(&b, "%s: regular file, %s (will be replaced)", t.Path, human(t.Size))
	case Other:
		fmt.Fprintf(&b, "%s: not a disk or regular file", t.Path)
	case BlockDevice:
		fmt.Fprintf(&b, "%s: %s", t.Path, human(t.Size))
		if d := strings.TrimSpace(t.Vendor + " " + t.Model); d != "" {
			fmt.Fprintf(&b, ", %s", d)
		}
		if t.Removable {
			b.WriteString(" (removable)")
		}
		if t.Disk != "" {
			fmt.Fprintf(&b, "\n  this is a partition of /dev/%s", t.Disk)
		}
		if len(t.Partitions) == 0 {
			b.WriteString("\n  no partitions")
		}
		for _, p := range t.Partitions {
			fmt.Fprintf(&b, "\n  %-10s %10s", p.Name, human(p.Size))
			if p.FSType != "" {
				fmt.Fprintf(&b, "  %s", p.FSType)
			}
			if p.Label != "" {
				fmt.Fprintf(&b, "  %q", p.Label)
			}
		}
		for _, u := range t.InUse {
			fmt.Fprintf(&b, "\n  in use: %s", u)
		}
		if t.RootDisk != "" {
			fmt.Fprintf(&b, "\n  holds the running system: %s", t.RootDisk)
		}
	}
	return b.String()
}

// human formats a byte count in binary units.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// node is what stat says about a path.
type node struct {
	kind Kind
	rdev uint64 // block devices
	size int64  // regular files
	info fs.FileInfo
}

// system is the view of the running system the safety checks use. Tests
// point root at a fake /proc and /sys tree and replace lookup.
type system struct {
	root   string                                   // "" = "/"
	lookup func(path string) (node, error)          // stat of the target
	fsInfo func(devs []string) map[string][2]string // /dev path -> {type, label}
}

func hostSystem(root string) system {
	s := system{root: root, lookup: statNode}
	if root == "" || root == "/" {
		if _, err := exec.LookPath("blkid"); err == nil {
			s.fsInfo = blkid
		}
	}
	return s
}

func (s system) path(p string) string {
	if s.root == "" {
		return p
	}
	return filepath.Join(s.root, p)
}

func statNode(path string) (node, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return node{kind: Missing}, nil
	}
	if err != nil {
		return node{}, err
	}
	n := node{info: fi, size: fi.Size()}
	switch {
	case fi.Mode().IsRegular():
		n.kind = File
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		n.kind = BlockDevice
		n.rdev = fi.Sys().(*syscall.Stat_t).Rdev
	default:
		n.kind = Other
	}
	return n, nil
}

// Describe reports what flashing device (a block device or a file) would
// overwrite, looked up in the running system's /proc, /sys and /dev.
func Describe(device string) (*Target, error) {
	return hostSystem("").describe(device)
}

func (s system) describe(path string) (*Target, error) {
	n, err := s.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", path, err)
	}
	t := &Target{Path: path, Kind: n.kind, Size: n.size, info: n.info}
	if n.kind != BlockDevice {
		return t, nil
	}
	t.Dev = fmt.Sprintf("%d:%d", unix.Major(n.rdev), unix.Minor(n.rdev))
	blocks, err := s.blockDevices()
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", path, err)
	}
	t.Name = blocks.byDev[t.Dev]
	if t.Name == "" {
		return nil, fmt.Errorf("describe %s: block device %s not found in /sys/class/block", path, t.Dev)
	}
	t.Size = s.sectors(t.Name) * 512
	t.Disk = blocks.parent[t.Name]
	dir := s.path("/sys/class/block/" + t.Name)
	t.Vendor = readTrim(filepath.Join(dir, "device/vendor"))
	t.Model = readTrim(filepath.Join(dir, "device/model"))
	if t.Model == "" { // SD cards (mmcblk) call it name
		t.Model = readTrim(filepath.Join(dir, "device/name"))
	}
	t.Removable = readTrim(filepath.Join(dir, "removable")) == "1"
	var devs []string
	for _, p := range blocks.children[t.Name] {
		t.Partitions = append(t.Partitions, Partition{Name: p, Size: s.sectors(p) * 512})
		devs = append(devs, "/dev/"+p)
	}
	if s.fsInfo != nil && len(devs) > 0 {
		info := s.fsInfo(devs)
		for i := range t.Partitions {
			fi := info["/dev/"+t.Partitions[i].Name]
			t.Partitions[i].FSType, t.Partitions[i].Label = fi[0], fi[1]
		}
	}
	if err := s.inUse(t, blocks); err != nil {
		return nil, fmt.Errorf("describe %s: %w", path, err)
	}
	return t, nil
}

func (s system) sectors(name string) int64 {
	n, _ := strconv.ParseInt(readTrim(s.path("/sys/class/block/"+name+"/size")), 10, 64)
	return n
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// blockTree is /sys/class/block: names by major:minor, partitions and
// their disks, and the stacking of device-mapper/md devices.
type blockTree struct {
	byDev    map[string]string   // "8:16" -> "sdb"
	parent   map[string]string   // "sdb1" -> "sdb"
	children map[string][]string // "sdb" -> ["sdb1", "sdb2"]
	holders  map[string][]string // "sdb2" -> ["dm-0"]
	slaves   map[string][]string // "dm-0" -> ["sdb2"]
}

func (s system) blockDevices() (*blockTree, error) {
	dir := s.path("/sys/class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	bt := &blockTree{
		byDev:    map[string]string{},
		parent:   map[string]string{},
		children: map[string][]string{},
		holders:  map[string][]string{},
		slaves:   map[string][]string{},
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		if dev := readTrim(filepath.Join(p, "dev")); dev != "" {
			bt.byDev[dev] = name
		}
		// A partition's sysfs directory sits inside its disk's
		// (/sys/devices/.../block/sdb/sdb1).
		if _, err := os.Stat(filepath.Join(p, "partition")); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				disk := filepath.Base(filepath.Dir(real))
				bt.parent[name] = disk
				bt.children[disk] = append(bt.children[disk], name)
			}
		}
		for _, rel := range []struct {
			sub string
			m   map[string][]string
		}{{"holders", bt.holders}, {"slaves", bt.slaves}} {
			hs, _ := os.ReadDir(filepath.Join(p, rel.sub))
			for _, h := range hs {
				rel.m[name] = append(rel.m[name], h.Name())
			}
		}
	}
	for _, c := range bt.children {
		sort.Slice(c, func(i, j int) bool { return partLess(c[i], c[j]) })
	}
	return bt, nil
}

// partLess orders sdb2 before sdb10.
func partLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// disk returns the whole disk that name is or is a partition of.
func (bt *blockTree) disk(name string) string {
	if d, ok := bt.parent[name]; ok {
		return d
	}
	return name
}

// stack returns name, its partitions and, transitively, everything built
// on them (device-mapper, md).
func (bt *blockTree) stack(name string) []string {
	return walk(name, func(n string) []string { return slices.Concat(bt.children[n], bt.holders[n]) })
}

// disksUnder returns the disks name is ultimately stored on, following
// slaves down from device-mapper/md devices.
func (bt *blockTree) disksUnder(name string) []string {
	var out []string
	for _, n := range walk(name, func(n string) []string { return bt.slaves[n] }) {
		if len(bt.slaves[n]) == 0 {
			out = append(out, bt.disk(n))
		}
	}
	return out
}

// walk lists the devices reachable from name through next, depth first,
// each once.
func walk(name string, next func(string) []string) []string {
	seen := map[string]bool{}
	var out []string
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		out = append(out, n)
		for _, m := range next(n) {
			visit(m)
		}
	}
	visit(name)
	return out
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	dev    string // "8:17"
	point  string
	source string // "/dev/sdb1"
}

func parseMountinfo(b []byte) []mount {
	var ms []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		ms = append(ms, mount{dev: f[2], point: unescapeOctal(f[4]), source: unescapeOctal(f[sep+2])})
	}
	return ms
}

// unescapeOctal undoes the kernel's \040-style escaping of spaces, tabs,
// newlines and backslashes in mountinfo and swaps.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountName maps a mount to a block device name: by major:minor, or, for
// file systems that report an anonymous device (btrfs), by its source.
func (bt *blockTree) mountName(m mount) string {
	if n, ok := bt.byDev[m.dev]; ok {
		return n
	}
	if strings.HasPrefix(m.source, "/dev/") {
		n := filepath.Base(m.source)
		for _, known := range bt.byDev {
			if known == n {
				return n
			}
		}
	}
	return ""
}

// inUse fills t.InUse and t.RootDisk.
func (s system) inUse(t *Target, bt *blockTree) error {
	mi, err := os.ReadFile(s.path("/proc/self/mountinfo"))
	if err != nil {
		return err
	}
	mounts := parseMountinfo(mi)
	stack := map[string]bool{}
	for _, n := range bt.stack(t.Name) {
		stack[n] = true
	}
	for _, m := range mounts {
		if n := bt.mountName(m); stack[n] {
			t.InUse = append(t.InUse, fmt.Sprintf("/dev/%s is mounted on %s", n, m.point))
		}
	}
	if sw, err := os.ReadFile(s.path("/proc/swaps")); err == nil {
		for i, line := range strings.Split(string(sw), "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) == 0 {
				continue
			}
			if n := filepath.Base(unescapeOctal(f[0])); stack[n] {
				t.InUse = append(t.InUse, fmt.Sprintf("/dev/%s is in use as swap", n))
			}
		}
	}
	for _, n := range bt.stack(t.Name) {
		for _, h := range bt.holders[n] {
			t.InUse = append(t.InUse, fmt.Sprintf("/dev/%s is held by /dev/%s", n, h))
		}
	}
	// The last mount on / is the one in effect.
	var root *mount
	for i := range mounts {
		if mounts[i].point == "/" {
			root = &mounts[i]
		}
	}
	if root != nil {
		if rn := bt.mountName(*root); rn != "" {
			target := bt.disk(t.Name)
			for _, d := range bt.disksUnder(rn) {
				if d == target {
					t.RootDisk = fmt.Sprintf("/ is /dev/%s (%s)", rn, root.dev)
				}
			}
		}
	}
	return nil
}

// blkid asks blkid for the file-system types and labels of devs.
func blkid(devs []string) map[string][2]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// blkid exits 2 when one of the devices has no file system; the
	// output for the others is still good.
	out, _ := exec.CommandContext(ctx, "blkid", append([]string{"-o", "export"}, devs...)...).Output()
	info := map[string][2]string{}
	var dev, typ, label string
	flush := func() {
		if dev != "" {
			info[dev] = [2]string{typ, label}
		}
		dev, typ, label = "", "", ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			flush()
			continue
		}
		switch k {
		case "DEVNAME":
			dev = v
		case "TYPE":
			typ = v
		case "LABEL":
			label = v
		}
	}
	flush()
	return info
}
