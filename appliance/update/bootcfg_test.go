package update

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/image/fat16"
)

// Disk identifiers of the fake boot partitions: the device's own disk
// GUID and MBR signature, and the GUID of the disk a release was built
// on (which a device must not take over).
const (
	devGUID = "5c1e0b9a-3d2f-4a67-8e4b-9f0a1b2c3d4e"
	relGUID = "0fedcba9-8765-4321-a0b1-c2d3e4f5a6b7"
	devMBR  = "1a2b3c4d"
)

// cmdlinePadded is the size image.Build pads the command line files to
// (image.cmdlineFileSize).
const cmdlinePadded = 512

// bootVolSize is the fake boot partitions' size: the smallest FAT16
// volume has 4085 clusters, so 4 MiB (512-byte clusters) is plenty.
const bootVolSize = 4 << 20

// gptRoot is the GPT form of root= for partition p of the disk whose
// partition 1 has the GUID guid.
func gptRoot(guid string, p int) string {
	return fmt.Sprintf("root=PARTUUID=%s/PARTNROFF=%d", guid, p-1)
}

// mbrRoot is the MBR form of root= for partition p.
func mbrRoot(p int) string { return fmt.Sprintf("root=PARTUUID=%s-%02x", devMBR, p) }

// kernelCmdline is a kernel command line as gokrazy's image has it.
func kernelCmdline(root string) string {
	return "console=ttyS0,115200 console=tty1 " + root + " init=/gokrazy/init rootwait panic=10 oops=panic"
}

// padded pads s with spaces to cmdlinePadded bytes, as image.Build does.
func padded(tb testing.TB, s string) []byte {
	tb.Helper()
	if len(s) > cmdlinePadded {
		tb.Fatalf("%d bytes do not fit %d", len(s), cmdlinePadded)
	}
	return []byte(s + strings.Repeat(" ", cmdlinePadded-len(s)))
}

// cmdlineTxt, gokrazyConf and syslinuxCfg are the command line files as
// image/boot.go and image/bios.go write them.
func cmdlineTxt(tb testing.TB, root string) []byte {
	tb.Helper()
	return padded(tb, kernelCmdline(root)+"\n")
}

func gokrazyConf(tb testing.TB, root string) []byte {
	tb.Helper()
	return padded(tb, "title PC2\rlinux /vmlinuz\roptions "+kernelCmdline(root)+"\n")
}

func syslinuxCfg(tb testing.TB, root string) []byte {
	tb.Helper()
	return padded(tb, strings.Join([]string{
		"SERIAL 0 115200", "DEFAULT pc2", "PROMPT 0", "NOESCAPE 1", "ALLOWOPTIONS 0",
		"LABEL pc2", "LINUX /vmlinuz", "APPEND " + kernelCmdline(root),
	}, "\n")+"\n")
}

// settingsJSON is a device settings file padded to 16 KiB, as image.Build
// reserves room for it.
func settingsJSON(s string) []byte {
	return append([]byte(s), bytes.Repeat([]byte(" "), 16<<10-len(s))...)
}

// pcBootFiles returns the files of an x86 boot partition (UEFI and BIOS)
// whose command lines name root.
func pcBootFiles(tb testing.TB, root string, kernel, settings []byte) map[string][]byte {
	tb.Helper()
	files := map[string][]byte{
		"vmlinuz":                     kernel,
		"cmdline.txt":                 cmdlineTxt(tb, root),
		"EFI/BOOT/BOOTX64.EFI":        []byte("systemd-boot, not really"),
		"loader/loader.conf":          []byte("default gokrazy.conf\ntimeout 0\neditor no\n"),
		"loader/entries/gokrazy.conf": gokrazyConf(tb, root),
		"syslinux.cfg":                syslinuxCfg(tb, root),
		"ldlinux.sys":                 bytes.Repeat([]byte("ldlinux"), 1000),
	}
	if settings != nil {
		files[settingsFile] = settings
	}
	return files
}

// buildVolume returns a FAT16 volume of bootVolSize bytes holding files,
// and the extent of each (by path with a leading slash).
func buildVolume(tb testing.TB, files map[string][]byte) ([]byte, map[string]fat16.Extent) {
	tb.Helper()
	fs := fat16.New(fat16.Options{Size: bootVolSize, Label: "PC2BOOT", VolumeID: 0x2025, ModTime: time.Unix(1700000000, 0)})
	for p, b := range files {
		fs.Add(p, b)
	}
	img, ext, err := fs.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return img, ext
}

// memVolume is a boot volume in memory.
type memVolume struct{ b []byte }

func (v *memVolume) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(v.b)) {
		return 0, fmt.Errorf("read at %d past the volume's end", off)
	}
	n := copy(p, v.b[off:])
	if n < len(p) {
		return n, fmt.Errorf("short read at %d", off)
	}
	return n, nil
}

func (v *memVolume) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(v.b)) {
		return 0, fmt.Errorf("write at %d past the volume's end", off)
	}
	return copy(v.b[off:], p), nil
}

// readVolFile reads one file of vol.
func readVolFile(tb testing.TB, vol []byte, name string) []byte {
	tb.Helper()
	b, err := fat16.ReadFile(bytes.NewReader(vol), name)
	if err != nil {
		tb.Fatalf("read %s: %v", name, err)
	}
	return b
}

// gokrazyTryEdit is gokrazy's init asking for a test boot the way it
// edits a file in place: its flag goes before the '\n' that ends the
// command line, and the padding shrinks by as much.
func gokrazyTryEdit(tb testing.TB, data []byte) []byte {
	tb.Helper()
	i := bytes.LastIndexByte(data, '\n')
	out := append(bytes.Clone(data[:i]), " "+flagTryInactive...)
	out = append(out, data[i:len(data)-len(flagTryInactive)-1]...)
	if len(out) != len(data) || !bytes.HasSuffix(out, []byte(" ")) {
		tb.Fatalf("the fake gokrazy edit needs padding: %q", data)
	}
	return out
}

// gokrazySwitchEdit is gokrazy's init starting the test boot: it
// replaces its try flag by switch_on_boot and pads the line before the
// newline to keep the file's length.
func gokrazySwitchEdit(tb testing.TB, data []byte) []byte {
	tb.Helper()
	try := " " + flagTryInactive
	sw := " " + flagSwitchOnBoot + strings.Repeat(" ", len(flagTryInactive)-len(flagSwitchOnBoot))
	if !bytes.Contains(data, []byte(try+"\n")) {
		tb.Fatalf("no %q before a newline in %q", try, data)
	}
	return bytes.Replace(data, []byte(try), []byte(sw), 1)
}

func TestRootPartition(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  int
	}{
		{gptRoot(devGUID, 2), 2},
		{gptRoot(devGUID, 3), 3},
		{"root=PARTUUID=" + strings.ToUpper(devGUID) + "/PARTNROFF=2", 3},
		{mbrRoot(2), 2},
		{mbrRoot(3), 3},
		{"root=PARTUUID=1a2b3c4d-02", 2},
	} {
		got, err := rootPartition(tc.field)
		if err != nil || got != tc.want {
			t.Errorf("rootPartition(%q) = %d, %v; want %d", tc.field, got, err, tc.want)
		}
	}
	for _, field := range []string{
		"",
		"root=/dev/mmcblk0p2",
		"root=UUID=" + devGUID,
		"PARTUUID=" + devGUID + "/PARTNROFF=1",
		"root=PARTUUID=" + devGUID + "/PARTNROFF=0", // partition 1, the boot partition
		"root=PARTUUID=" + devGUID + "/PARTNROFF=3",
		"root=PARTUUID=" + devGUID + "/PARTNROFF=",
		"root=PARTUUID=" + devGUID + "/PARTNROFF=x",
		"root=PARTUUID=" + devGUID, // a GUID without PARTNROFF: its last group is no partition
		"root=PARTUUID=1a2b3c4d-01",
		"root=PARTUUID=1a2b3c4d-04",
		"root=PARTUUID=1a2b3c4d-2",
		"root=PARTUUID=1a2b3c4d-002",
		"root=PARTUUID=-02",
		"root=PARTUUID=1a2b3c4d02",
	} {
		if n, err := rootPartition(field); !errors.Is(err, ErrBootConfig) {
			t.Errorf("rootPartition(%q) = %d, %v; want ErrBootConfig", field, n, err)
		}
	}
}

func TestWithPartition(t *testing.T) {
	for _, tc := range []struct {
		field string
		p     int
		want  string
	}{
		{gptRoot(devGUID, 2), 3, gptRoot(devGUID, 3)},
		{gptRoot(devGUID, 3), 2, gptRoot(devGUID, 2)},
		{gptRoot(devGUID, 2), 2, gptRoot(devGUID, 2)},
		{mbrRoot(2), 3, mbrRoot(3)},
		{mbrRoot(3), 2, mbrRoot(2)},
		{mbrRoot(3), 3, mbrRoot(3)},
	} {
		got, err := withPartition(tc.field, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("withPartition(%q, %d) = %q, %v; want %q", tc.field, tc.p, got, err, tc.want)
		}
		if n, err := rootPartition(got); err != nil || n != tc.p {
			t.Errorf("rootPartition(%q) = %d, %v; want %d", got, n, err, tc.p)
		}
	}
	for _, field := range []string{"root=/dev/sda2", "root=PARTUUID=1a2b3c4d-05", "root=PARTUUID=" + devGUID} {
		if got, err := withPartition(field, 3); !errors.Is(err, ErrBootConfig) {
			t.Errorf("withPartition(%q, 3) = %q, %v; want ErrBootConfig", field, got, err)
		}
	}
}

func TestRootField(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"cmdline.txt", string(cmdlineTxt(t, gptRoot(devGUID, 2))), gptRoot(devGUID, 2)},
		{"gokrazy.conf", string(gokrazyConf(t, mbrRoot(3))), mbrRoot(3)},
		{"syslinux.cfg", string(syslinuxCfg(t, gptRoot(devGUID, 3))), gptRoot(devGUID, 3)},
		// root= inside another field is not the root field.
		{"lookalike first", "console=tty1 xroot=PARTUUID=zz-02 " + mbrRoot(3) + "\n", mbrRoot(3)},
		{"first on its line", mbrRoot(2) + " rootwait\n  ", mbrRoot(2)},
	} {
		got, err := rootField([]byte(tc.data))
		if err != nil || got != tc.want {
			t.Errorf("%s: rootField = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	for _, data := range []string{
		"",
		"console=tty1 rootwait\n",
		"console=tty1 xroot=PARTUUID=zz-02\n",
		"console=tty1 " + mbrRoot(2), // no line end
	} {
		if got, err := rootField([]byte(data)); !errors.Is(err, ErrBootConfig) {
			t.Errorf("rootField(%q) = %q, %v; want ErrBootConfig", data, got, err)
		}
	}
}

func TestEditCmdline(t *testing.T) {
	root2, root3 := gptRoot(devGUID, 2), gptRoot(devGUID, 3)
	for _, tc := range []struct {
		name string
		file func(testing.TB, string) []byte
	}{
		{"cmdline.txt", cmdlineTxt},
		{"gokrazy.conf", gokrazyConf},
		{"syslinux.cfg", syslinuxCfg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := tc.file(t, root2)

			// The test-boot flag goes at the end of the command line,
			// before its '\n', and the file keeps its length.
			try, err := editCmdline(orig, addTryInactive)
			if err != nil {
				t.Fatal(err)
			}
			if len(try) != len(orig) {
				t.Errorf("flagged file is %d bytes, want %d", len(try), len(orig))
			}
			if want := gokrazyTryEdit(t, orig); !bytes.Equal(try, want) {
				t.Errorf("flagged file:\n%q\nwant\n%q", try, want)
			}
			again, err := editCmdline(try, addTryInactive)
			if err != nil || !bytes.Equal(again, try) {
				t.Errorf("flagging twice: %q, %v; want it unchanged", again, err)
			}

			// Switching roots keeps the other lines (with their '\r')
			// and removes the flags, gokrazy's as well as ours.
			for _, in := range [][]byte{orig, try, gokrazySwitchEdit(t, try), gokrazySwitchEdit(t, gokrazyTryEdit(t, orig))} {
				got, err := editCmdline(in, setRoot(root3))
				if err != nil {
					t.Fatal(err)
				}
				if want := tc.file(t, root3); !bytes.Equal(got, want) {
					t.Errorf("switched %q:\n%q\nwant\n%q", in, got, want)
				}
				back, err := editCmdline(got, setRoot(root2))
				if err != nil || !bytes.Equal(back, orig) {
					t.Errorf("switching back: %q, %v; want the original", back, err)
				}
			}
		})
	}

	if got, err := editCmdline(gokrazyConf(t, root2), setRoot(root3)); err != nil ||
		!bytes.HasPrefix(got, []byte("title PC2\rlinux /vmlinuz\roptions console=")) {
		t.Errorf("gokrazy.conf lost its '\\r' lines: %q, %v", got, err)
	}

	// No padding: the flag does not fit, and nothing is returned.
	tight := []byte(kernelCmdline(root2) + "\n")
	if got, err := editCmdline(tight, addTryInactive); !errors.Is(err, ErrBootConfig) || got != nil {
		t.Errorf("editing an unpadded file = %q, %v; want ErrBootConfig", got, err)
	}
	// A shorter line (root= of the same length, flags gone) still fits.
	if got, err := editCmdline(tight, setRoot(root3)); err != nil || string(got) != kernelCmdline(root3)+"\n" {
		t.Errorf("switching an unpadded file = %q, %v", got, err)
	}
	// gokrazy.conf with '\r' only: the command line has no '\n' to end it.
	if got, err := editCmdline([]byte("title PC2\roptions "+kernelCmdline(root2)+"\r   "), addTryInactive); !errors.Is(err, ErrBootConfig) {
		t.Errorf("a command line without a final newline = %q, %v; want ErrBootConfig", got, err)
	}
}

func TestReadBootConfig(t *testing.T) {
	root2 := gptRoot(devGUID, 2)
	files := pcBootFiles(t, root2, []byte("kernel"), settingsJSON(`{}`))
	for _, tc := range []struct {
		name           string
		edit           func(map[string][]byte)
		testBoot, flag bool
	}{
		{"clean", func(map[string][]byte) {}, false, false},
		{"try on cmdline.txt", func(f map[string][]byte) { f["cmdline.txt"] = gokrazyTryEdit(t, f["cmdline.txt"]) }, true, true},
		{"switched", func(f map[string][]byte) {
			f["cmdline.txt"] = gokrazySwitchEdit(t, gokrazyTryEdit(t, f["cmdline.txt"]))
		}, false, true},
		// gokrazy's init reads the try flag only from cmdline.txt.
		{"try on gokrazy.conf", func(f map[string][]byte) {
			f["loader/entries/gokrazy.conf"] = gokrazyTryEdit(t, f["loader/entries/gokrazy.conf"])
		}, false, true},
		{"try on syslinux.cfg", func(f map[string][]byte) { f["syslinux.cfg"] = gokrazyTryEdit(t, f["syslinux.cfg"]) }, false, true},
	} {
		f := maps.Clone(files)
		tc.edit(f)
		vol, _ := buildVolume(t, f)
		c, err := readBootConfig(&memVolume{vol})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := bootConfig{root: root2, partition: 2, testBoot: tc.testBoot, flags: tc.flag}
		if c != want {
			t.Errorf("%s: readBootConfig = %+v, want %+v", tc.name, c, want)
		}
	}

	// Only cmdline.txt must be there (a Pi has no other).
	vol, _ := buildVolume(t, map[string][]byte{"cmdline.txt": padded(t, kernelCmdline(mbrRoot(3))+"\n"), "kernel8.img": []byte("k")})
	if c, err := readBootConfig(&memVolume{vol}); err != nil || c.partition != 3 || c.root != mbrRoot(3) {
		t.Errorf("Pi boot partition: %+v, %v", c, err)
	}
	for name, f := range map[string]map[string][]byte{
		"no cmdline.txt":      {"vmlinuz": []byte("k"), "syslinux.cfg": syslinuxCfg(t, root2)},
		"no root=":            {"cmdline.txt": padded(t, "console=tty1 rootwait\n")},
		"root= of no root":    {"cmdline.txt": padded(t, "root=/dev/sda2 rootwait\n")},
		"a broken other file": {"cmdline.txt": cmdlineTxt(t, root2), "syslinux.cfg": []byte("DEFAULT pc2\n")},
	} {
		vol, _ := buildVolume(t, f)
		if c, err := readBootConfig(&memVolume{vol}); !errors.Is(err, ErrBootConfig) {
			t.Errorf("%s: readBootConfig = %+v, %v; want ErrBootConfig", name, c, err)
		}
	}
}

func TestSelectRoot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		root      func(p int) string
		from, sel int
	}{
		{"GPT 2 to 3", func(p int) string { return gptRoot(devGUID, p) }, 2, 3},
		{"GPT 3 to 2", func(p int) string { return gptRoot(devGUID, p) }, 3, 2},
		{"MBR 2 to 3", mbrRoot, 2, 3},
		{"MBR 3 to 3", mbrRoot, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := pcBootFiles(t, tc.root(tc.from), []byte("kernel"), settingsJSON(`{"a":1}`))
			// A test boot in progress, with flags on every file.
			files["cmdline.txt"] = gokrazySwitchEdit(t, gokrazyTryEdit(t, files["cmdline.txt"]))
			files["syslinux.cfg"] = gokrazyTryEdit(t, files["syslinux.cfg"])
			files["loader/entries/gokrazy.conf"] = gokrazyTryEdit(t, files["loader/entries/gokrazy.conf"])
			vol, _ := buildVolume(t, files)
			v := &memVolume{bytes.Clone(vol)}
			if err := selectRoot(v, tc.sel); err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{
				"cmdline.txt":                 cmdlineTxt(t, tc.root(tc.sel)),
				"loader/entries/gokrazy.conf": gokrazyConf(t, tc.root(tc.sel)),
				"syslinux.cfg":                syslinuxCfg(t, tc.root(tc.sel)),
			}
			for p, w := range want {
				if got := readVolFile(t, v.b, p); !bytes.Equal(got, w) {
					t.Errorf("%s:\n%q\nwant\n%q", p, got, w)
				}
			}
			for p, b := range files {
				if _, ok := want[p]; !ok && !bytes.Equal(readVolFile(t, v.b, p), b) {
					t.Errorf("%s changed", p)
				}
			}
			c, err := readBootConfig(v)
			if err != nil || c.partition != tc.sel || c.flags || c.testBoot {
				t.Errorf("after selectRoot(%d): %+v, %v", tc.sel, c, err)
			}
		})
	}
}

func TestEnableTestBoot(t *testing.T) {
	files := pcBootFiles(t, gptRoot(devGUID, 2), []byte("kernel"), settingsJSON(`{}`))
	vol, ext := buildVolume(t, files)
	v := &memVolume{bytes.Clone(vol)}
	if err := enableTestBoot(v); err != nil {
		t.Fatal(err)
	}
	if got, want := readVolFile(t, v.b, "cmdline.txt"), gokrazyTryEdit(t, files["cmdline.txt"]); !bytes.Equal(got, want) {
		t.Errorf("cmdline.txt:\n%q\nwant\n%q", got, want)
	}
	// Not a byte outside cmdline.txt's data changed (same length: not
	// even its directory entry).
	e := ext["/cmdline.txt"]
	if !bytes.Equal(v.b[:e.Offset], vol[:e.Offset]) || !bytes.Equal(v.b[e.Offset+e.Length:], vol[e.Offset+e.Length:]) {
		t.Error("enableTestBoot wrote outside cmdline.txt")
	}
	c, err := readBootConfig(v)
	if want := (bootConfig{root: gptRoot(devGUID, 2), partition: 2, testBoot: true, flags: true}); err != nil || c != want {
		t.Errorf("readBootConfig = %+v, %v; want %+v", c, err, want)
	}
	// Twice: no second flag.
	before := bytes.Clone(v.b)
	if err := enableTestBoot(v); err != nil || !bytes.Equal(v.b, before) {
		t.Errorf("enableTestBoot again: %v, changed %t", err, !bytes.Equal(v.b, before))
	}
}

// TestBootEditRefused: an edit that does not fit a file, or a file
// without a proper command line, is refused with ErrBootConfig before
// anything is written.
func TestBootEditRefused(t *testing.T) {
	root := gptRoot(devGUID, 2)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		edit  func(bootVolume) error
	}{
		{"flag on unpadded cmdline.txt", map[string][]byte{"cmdline.txt": []byte(kernelCmdline(root) + "\n"), "vmlinuz": []byte("k")}, enableTestBoot},
		{"cmdline.txt without newline", map[string][]byte{"cmdline.txt": []byte(kernelCmdline(root) + "   ")}, enableTestBoot},
		{"syslinux.cfg without newline", map[string][]byte{
			"cmdline.txt": cmdlineTxt(t, root), "syslinux.cfg": []byte("APPEND " + kernelCmdline(root)),
		}, func(v bootVolume) error { return selectRoot(v, 3) }},
		{"no root= on gokrazy.conf", map[string][]byte{
			"cmdline.txt": cmdlineTxt(t, root), "loader/entries/gokrazy.conf": padded(t, "title PC2\rlinux /vmlinuz\roptions rootwait\n"),
		}, func(v bootVolume) error { return selectRoot(v, 3) }},
	} {
		vol, _ := buildVolume(t, tc.files)
		v := &memVolume{bytes.Clone(vol)}
		if err := tc.edit(v); !errors.Is(err, ErrBootConfig) {
			t.Errorf("%s: %v, want ErrBootConfig", tc.name, err)
		}
		if !bytes.Equal(v.b, vol) {
			t.Errorf("%s: the refused edit changed the volume", tc.name)
		}
	}
}
