package bootslot_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/memvol"
)

const (
	guid = "5c1e0b9a-3d2f-4a67-8e4b-9f0a1b2c3d4e"
	sig  = "1a2b3c4d"
)

func gptRoot(p int) string { return fmt.Sprintf("root=PARTUUID=%s/PARTNROFF=%d", guid, p-1) }
func mbrRoot(p int) string { return fmt.Sprintf("root=PARTUUID=%s-%02x", sig, p) }

// cmdline is slot's kernel command line, as image.Build writes it.
func cmdline(slot string) string {
	p, _ := bootslot.Partition(slot)
	return "console=ttyS0,115200 console=tty1 " + gptRoot(p) + " init=/gokrazy/init rootwait panic=10 oops=panic"
}

func pad(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := bootslot.Pad(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// entry and syslinux are the loaders' selectors as image.Build writes
// them, naming slot's kernel with command line c.
func entry(tb testing.TB, slot, c string) []byte {
	tb.Helper()
	return pad(tb, entryText(slot, c))
}

func entryText(slot, c string) string {
	return "title PC2\rlinux /" + slot + "/vmlinuz\roptions " + c + "\n"
}

func syslinux(tb testing.TB, slot, c string) []byte {
	tb.Helper()
	return pad(tb, syslinuxText(slot, c))
}

func syslinuxText(slot, c string) string {
	return strings.Join([]string{
		"SERIAL 0 115200", "DEFAULT pc2", "PROMPT 0", "NOESCAPE 1", "ALLOWOPTIONS 0",
		"LABEL pc2", "LINUX /" + slot + "/vmlinuz", "APPEND " + c,
	}, "\n") + "\n"
}

// oldEntry and oldSyslinux are the loaders' files before the A/B
// layout: the kernel at the partition's root.
func oldEntry(c string) string {
	return "title PC2\rlinux /vmlinuz\roptions " + c + "\n"
}

func oldSyslinux(c string) string {
	return strings.Replace(syslinuxText(bootslot.A, c), "LINUX /a/vmlinuz", "LINUX /vmlinuz", 1)
}

// piBody is a board's config.txt after the os_prefix line.
const piBody = "arm_64bit=1\nkernel=vmlinuz\n[pi4]\narm_boost=1\n[all]\nenable_uart=1\n"

func configTxt(tb testing.TB, slot string) []byte {
	tb.Helper()
	b, err := bootslot.NewConfigTxt(piBody, slot)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// piFiles is a Pi-like boot partition: shared firmware and config.txt,
// a kernel, a device tree and cmdline.txt in each slot.
func piFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	return map[string][]byte{
		"start4.elf":                bytes.Repeat([]byte("firmware"), 300),
		"config.txt":                configTxt(tb, bootslot.A),
		"a/vmlinuz":                 bytes.Repeat([]byte("kernel a "), 2000),
		"a/bcm2711-rpi-4-b.dtb":     []byte("dtb a"),
		"a/cmdline.txt":             pad(tb, cmdline(bootslot.A)+"\n"),
		"b/vmlinuz":                 bytes.Repeat([]byte("kernel b "), 2100),
		"b/bcm2711-rpi-4-b.dtb":     []byte("dtb b"),
		"b/cmdline.txt":             pad(tb, cmdline(bootslot.B)+"\n"),
		"overlays/miniuart-bt.dtbo": []byte("overlay"),
		"loader/entries/README.txt": []byte("not a selector"),
	}
}

// loaderFiles is an x86 boot partition: systemd-boot and SYSLINUX
// selectors naming slot a.
func loaderFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	return map[string][]byte{
		"EFI/BOOT/BOOTX64.EFI":        []byte("systemd-boot, not really"),
		"loader/loader.conf":          []byte("default gokrazy.conf\ntimeout 0\neditor no\n"),
		"loader/entries/gokrazy.conf": entry(tb, bootslot.A, cmdline(bootslot.A)),
		"syslinux.cfg":                syslinux(tb, bootslot.A, cmdline(bootslot.A)),
		"ldlinux.sys":                 bytes.Repeat([]byte("ldlinux"), 1000),
		"a/vmlinuz":                   bytes.Repeat([]byte("kernel a "), 2000),
		"a/cmdline.txt":               pad(tb, cmdline(bootslot.A)+"\n"),
		"b/vmlinuz":                   bytes.Repeat([]byte("kernel b "), 2100),
		"b/cmdline.txt":               pad(tb, cmdline(bootslot.B)+"\n"),
	}
}

// memVol is a writable volume in memory.
type memVol = memvol.Vol

// countVol records the writes to a volume; with Left >= 0 it takes only
// that many, as a power cut would.
type countVol = memvol.Cut

// buildVol returns a FAT16 volume of size bytes holding files, and the
// extent of each (by path with a leading slash).
func buildVol(tb testing.TB, size int64, files map[string][]byte) (memVol, map[string]fat16.Extent) {
	tb.Helper()
	f := fat16.New(fat16.Options{Size: size, Label: "PC2BOOT", VolumeID: 0x2025, ModTime: time.Unix(1700000000, 0)})
	for p, b := range files {
		f.Add(p, b)
	}
	img, ext, err := f.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return memVol(img), ext
}

func readFile(tb testing.TB, vol memVol, name string) []byte {
	tb.Helper()
	b, err := fat16.ReadFile(vol, name)
	if err != nil {
		tb.Fatalf("read %s: %v", name, err)
	}
	return b
}

// sizes returns every file of vol and its length.
func sizes(tb testing.TB, vol memVol) map[string]int64 {
	tb.Helper()
	out := map[string]int64{}
	if err := fat16.Walk(vol, func(p string, n int64) error { out[p] = n; return nil }); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestOfPartition(t *testing.T) {
	for p, slot := range map[int]string{2: bootslot.A, 3: bootslot.B} {
		if got, err := bootslot.Of(p); err != nil || got != slot {
			t.Errorf("Of(%d) = %q, %v; want %q", p, got, err, slot)
		}
		if got, err := bootslot.Partition(slot); err != nil || got != p {
			t.Errorf("Partition(%q) = %d, %v; want %d", slot, got, err, p)
		}
	}
	for _, p := range []int{-1, 0, 1, 4, 23} {
		if got, err := bootslot.Of(p); err == nil {
			t.Errorf("Of(%d) = %q, want an error", p, got)
		}
	}
	for _, slot := range []string{"", "c", "a/", "ab", "2"} {
		if got, err := bootslot.Partition(slot); !errors.Is(err, bootslot.ErrLayout) {
			t.Errorf("Partition(%q) = %d, %v; want ErrLayout", slot, got, err)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		path, slot, name string
		ok               bool
	}{
		{"a/vmlinuz", "a", "vmlinuz", true},
		{"/b/cmdline.txt", "b", "cmdline.txt", true},
		{"A/VMLINUZ", "a", "VMLINUZ", true}, // FAT names are case-insensitive
		{"b/overlays/miniuart-bt.dtbo", "b", "overlays/miniuart-bt.dtbo", true},
		{"vmlinuz", "", "", false},
		{"a", "", "", false},
		{"c/vmlinuz", "", "", false},
		{"ab/vmlinuz", "", "", false},
		{"loader/entries/gokrazy.conf", "", "", false},
		{"", "", "", false},
	} {
		slot, name, ok := bootslot.Split(tc.path)
		if slot != tc.slot || name != tc.name || ok != tc.ok {
			t.Errorf("Split(%q) = %q, %q, %t; want %q, %q, %t", tc.path, slot, name, ok, tc.slot, tc.name, tc.ok)
		}
	}
}

func TestIsSelector(t *testing.T) {
	for p, want := range map[string]bool{
		"config.txt":                   true,
		"/config.txt":                  true,
		"CONFIG.TXT":                   true,
		"loader/entries/gokrazy.conf":  true,
		"/LOADER/ENTRIES/GOKRAZY.CONF": true,
		"syslinux.cfg":                 true,
		"cmdline.txt":                  false,
		"a/cmdline.txt":                false,
		"a/config.txt":                 false,
		"loader/loader.conf":           false,
		"gokrazy.conf":                 false,
		"":                             false,
	} {
		if got := bootslot.IsSelector(p); got != want {
			t.Errorf("IsSelector(%q) = %t, want %t", p, got, want)
		}
	}
}

func TestPad(t *testing.T) {
	got, err := bootslot.Pad("root=x\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "root=x\n" + strings.Repeat(" ", bootslot.PadSize-7); string(got) != want {
		t.Errorf("Pad = %q, want %q", got, want)
	}
	full := strings.Repeat("x", bootslot.PadSize-1) + "\n"
	if got, err := bootslot.Pad(full); err != nil || string(got) != full {
		t.Errorf("Pad of %d bytes = %d bytes, %v; want it unchanged", len(full), len(got), err)
	}
	for _, s := range []string{"", "no newline", "x" + full} {
		if got, err := bootslot.Pad(s); err == nil {
			t.Errorf("Pad of %d bytes = %d bytes, want an error", len(s), len(got))
		}
	}
}

func TestNewConfigTxt(t *testing.T) {
	for _, body := range []string{"", "kernel=vmlinuz\n", "kernel=vmlinuz", piBody} {
		for _, slot := range []string{bootslot.A, bootslot.B} {
			b, err := bootslot.NewConfigTxt(body, slot)
			if err != nil {
				t.Fatalf("NewConfigTxt(%q, %s): %v", body, slot, err)
			}
			s := string(b)
			if len(b) != bootslot.PadSize {
				t.Errorf("NewConfigTxt(%q, %s) is %d bytes, want %d", body, slot, len(b), bootslot.PadSize)
			}
			first, rest, _ := strings.Cut(s, "\n")
			if first != "os_prefix="+slot+"/" {
				t.Errorf("NewConfigTxt(%q, %s): first line %q", body, slot, first)
			}
			if !strings.HasPrefix(rest, body) {
				t.Errorf("NewConfigTxt(%q, %s): the body does not follow os_prefix: %q", body, slot, rest)
			}
			lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
			if !strings.HasSuffix(s, "\n") || !strings.HasPrefix(lines[len(lines)-1], "#") {
				t.Errorf("NewConfigTxt(%q, %s) does not end in a comment line and a newline: %q", body, slot, s)
			}
			if got, err := bootslot.Selected(fileVol(t, map[string][]byte{bootslot.ConfigTxt: b})); err != nil || got != slot {
				t.Errorf("Selected(NewConfigTxt(%q, %s)) = %q, %v", body, slot, got, err)
			}
		}
	}

	// os_prefix=a/\n (13 bytes) + body + the shortest comment line "#\n".
	longest := strings.Repeat("#", bootslot.PadSize-13-2-1) + "\n"
	if b, err := bootslot.NewConfigTxt(longest, bootslot.A); err != nil || len(b) != bootslot.PadSize || !strings.HasSuffix(string(b), longest+"#\n") {
		t.Errorf("NewConfigTxt with a body of %d bytes = %q, %v", len(longest), b, err)
	}
	if b, err := bootslot.NewConfigTxt("#"+longest, bootslot.A); err == nil {
		t.Errorf("NewConfigTxt with a body of %d bytes = %d bytes, want an error", len(longest)+1, len(b))
	}
}

// fileVol is a volume holding files.
func fileVol(tb testing.TB, files map[string][]byte) memVol {
	tb.Helper()
	v, _ := buildVol(tb, 4<<20, files)
	return v
}

// differing returns the positions where a and b differ.
func differing(a, b []byte) []int {
	var out []int
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			out = append(out, i)
		}
	}
	return out
}

func TestSelectionConfigTxt(t *testing.T) {
	a, b := configTxt(t, bootslot.A), configTxt(t, bootslot.B)
	got, err := bootslot.Selection(bootslot.ConfigTxt, a, bootslot.B, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Errorf("a to b:\n%q\nwant\n%q", got, b)
	}
	// Only the slot's letter on the first line changed.
	if d := differing(a, got); len(got) != len(a) || len(d) != 1 || d[0] != len("os_prefix=") {
		t.Errorf("a to b: %d bytes (want %d), changed at %v", len(got), len(a), d)
	}
	for _, tc := range []struct {
		from []byte
		slot string
		want []byte
	}{{b, bootslot.A, a}, {a, bootslot.A, a}, {b, bootslot.B, b}} {
		if got, err := bootslot.Selection(bootslot.ConfigTxt, tc.from, tc.slot, "ignored"); err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("selecting %s on %q: %q, %v; want %q", tc.slot, tc.from, got, err, tc.want)
		}
	}
	// A hand-written config.txt keeps its line ends and has no padding.
	crlf := []byte("# boot slot\r\nOS_PREFIX=b/\r\nkernel=vmlinuz\r\n")
	if got, err := bootslot.Selection(bootslot.ConfigTxt, crlf, bootslot.A, ""); err != nil ||
		string(got) != "# boot slot\r\nos_prefix=a/\r\nkernel=vmlinuz\r\n" {
		t.Errorf("selecting a on %q: %q, %v", crlf, got, err)
	}

	for name, data := range map[string]string{
		"no os_prefix":      "kernel=vmlinuz\n",
		"os_prefix=c/":      "os_prefix=c/\nkernel=vmlinuz\n",
		"os_prefix=a":       "os_prefix=a\nkernel=vmlinuz\n",
		"os_prefix=a/boot/": "os_prefix=a/boot/\nkernel=vmlinuz\n",
		"no line end":       "os_prefix=a/",
		"empty":             "",
	} {
		if got, err := bootslot.Selection(bootslot.ConfigTxt, []byte(data), bootslot.B, ""); !errors.Is(err, bootslot.ErrLayout) || got != nil {
			t.Errorf("%s: Selection = %q, %v; want ErrLayout", name, got, err)
		}
	}
	if got, err := bootslot.Selection("cmdline.txt", a, bootslot.B, ""); err == nil {
		t.Errorf("Selection of cmdline.txt = %q, want an error", got)
	}
}

func TestSelectionLoaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		text func(slot, c string) string
	}{
		{bootslot.Entry, entryText},
		{bootslot.Syslinux, syslinuxText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := func(slot, c string) []byte { return pad(t, tc.text(slot, c)) }
			cA, cB := cmdline(bootslot.A), cmdline(bootslot.B)
			orig := file(bootslot.A, cA)

			got, err := bootslot.Selection(tc.name, orig, bootslot.B, cB)
			if err != nil {
				t.Fatal(err)
			}
			if want := file(bootslot.B, cB); !bytes.Equal(got, want) {
				t.Errorf("a to b:\n%q\nwant\n%q", got, want)
			}
			back, err := bootslot.Selection(tc.name, got, bootslot.A, cA)
			if err != nil || !bytes.Equal(back, orig) {
				t.Errorf("b back to a: %q, %v; want the original", back, err)
			}

			// The padding absorbs a longer command line, and gives the
			// room back to a shorter one.
			long := cB + " quiet loglevel=3 systemd.show_status=0"
			got, err = bootslot.Selection(tc.name, orig, bootslot.B, long)
			if want := file(bootslot.B, long); err != nil || !bytes.Equal(got, want) {
				t.Errorf("a longer command line: %q, %v; want %q", got, err, want)
			}
			if back, err := bootslot.Selection(tc.name, got, bootslot.A, cA); err != nil || !bytes.Equal(back, orig) {
				t.Errorf("back to a's shorter command line: %q, %v; want the original", back, err)
			}

			// The longest command line that fits the file, and one byte
			// more: refused, not truncated.
			room := bootslot.PadSize - len(tc.text(bootslot.B, ""))
			fits := cB + " x=" + strings.Repeat("y", room-len(cB)-3)
			if got, err := bootslot.Selection(tc.name, orig, bootslot.B, fits); err != nil || string(got) != tc.text(bootslot.B, fits) {
				t.Errorf("a command line of %d bytes: %q, %v; want it to fill the file", len(fits), got, err)
			}
			if got, err := bootslot.Selection(tc.name, orig, bootslot.B, fits+"y"); !errors.Is(err, bootslot.ErrLayout) || got != nil {
				t.Errorf("a command line of %d bytes: %q, %v; want ErrLayout", len(fits)+1, got, err)
			}
		})
	}

	// systemd-boot's entry keeps its '\r' line ends.
	got, err := bootslot.Selection(bootslot.Entry, entry(t, bootslot.A, cmdline(bootslot.A)), bootslot.B, cmdline(bootslot.B))
	if err != nil || !bytes.HasPrefix(got, []byte("title PC2\rlinux /b/vmlinuz\roptions console=")) {
		t.Errorf("the entry lost its '\\r' lines: %q, %v", got, err)
	}

	c := cmdline(bootslot.B)
	for name, tc := range map[string]struct{ file, data string }{
		"entry without options":       {bootslot.Entry, "title PC2\rlinux /a/vmlinuz\r\n"},
		"entry without linux":         {bootslot.Entry, "title PC2\roptions " + c + "\n"},
		"entry of the old layout":     {bootslot.Entry, oldEntry(c)},
		"entry naming slot c":         {bootslot.Entry, entryText("c", c)},
		"entry without a newline":     {bootslot.Entry, "title PC2\rlinux /a/vmlinuz\roptions " + c + "\r   "},
		"syslinux.cfg without APPEND": {bootslot.Syslinux, "DEFAULT pc2\nLABEL pc2\nLINUX /a/vmlinuz\n"},
		"syslinux.cfg without LINUX":  {bootslot.Syslinux, "DEFAULT pc2\nLABEL pc2\nAPPEND " + c + "\n"},
		"syslinux.cfg, old layout":    {bootslot.Syslinux, oldSyslinux(c)},
		"syslinux.cfg without a newline": {bootslot.Syslinux,
			strings.TrimSuffix(syslinuxText(bootslot.A, c), "\n")},
	} {
		if got, err := bootslot.Selection(tc.file, []byte(tc.data), bootslot.B, c); !errors.Is(err, bootslot.ErrLayout) || got != nil {
			t.Errorf("%s: Selection = %q, %v; want ErrLayout", name, got, err)
		}
	}
}

func TestSelected(t *testing.T) {
	cA, cB := cmdline(bootslot.A), cmdline(bootslot.B)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		want  string // "" : ErrLayout
	}{
		{"config.txt a", map[string][]byte{"config.txt": configTxt(t, bootslot.A)}, bootslot.A},
		{"config.txt b", map[string][]byte{"config.txt": configTxt(t, bootslot.B)}, bootslot.B},
		{"loaders a", map[string][]byte{bootslot.Entry: entry(t, bootslot.A, cA), bootslot.Syslinux: syslinux(t, bootslot.A, cA)}, bootslot.A},
		{"loaders b", map[string][]byte{bootslot.Entry: entry(t, bootslot.B, cB), bootslot.Syslinux: syslinux(t, bootslot.B, cB)}, bootslot.B},
		{"entry only", map[string][]byte{bootslot.Entry: entry(t, bootslot.B, cB)}, bootslot.B},
		{"all three", map[string][]byte{"config.txt": configTxt(t, bootslot.B), bootslot.Entry: entry(t, bootslot.B, cB), bootslot.Syslinux: syslinux(t, bootslot.B, cB)}, bootslot.B},
		{"upper-case names", map[string][]byte{"CONFIG.TXT": configTxt(t, bootslot.B)}, bootslot.B},

		{"entry and syslinux.cfg disagree", map[string][]byte{bootslot.Entry: entry(t, bootslot.B, cB), bootslot.Syslinux: syslinux(t, bootslot.A, cA)}, ""},
		{"config.txt and entry disagree", map[string][]byte{"config.txt": configTxt(t, bootslot.A), bootslot.Entry: entry(t, bootslot.B, cB)}, ""},
		{"no selector", map[string][]byte{"cmdline.txt": pad(t, cA+"\n"), "vmlinuz": []byte("k")}, ""},
		{"old Pi config.txt", map[string][]byte{"config.txt": []byte(piBody), "cmdline.txt": pad(t, cA+"\n")}, ""},
		{"old x86 entry", map[string][]byte{bootslot.Entry: pad(t, oldEntry(cA)), "cmdline.txt": pad(t, cA+"\n")}, ""},
		{"a broken syslinux.cfg", map[string][]byte{bootslot.Entry: entry(t, bootslot.A, cA), bootslot.Syslinux: []byte("DEFAULT pc2\n")}, ""},
	} {
		got, err := bootslot.Selected(fileVol(t, tc.files))
		switch {
		case tc.want == "" && !errors.Is(err, bootslot.ErrLayout):
			t.Errorf("%s: Selected = %q, %v; want ErrLayout", tc.name, got, err)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("%s: Selected = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestReadCmdline(t *testing.T) {
	vol := fileVol(t, loaderFiles(t))
	for _, slot := range []string{bootslot.A, bootslot.B} {
		if got, err := bootslot.ReadCmdline(vol, slot); err != nil || got != cmdline(slot) {
			t.Errorf("ReadCmdline(%s) = %q, %v; want %q", slot, got, err, cmdline(slot))
		}
	}
	for name, files := range map[string]map[string][]byte{
		"no cmdline.txt":   {"a/vmlinuz": []byte("k")},
		"empty first line": {"a/cmdline.txt": pad(t, "\n"+cmdline(bootslot.A)+"\n")},
		"no newline":       {"a/cmdline.txt": []byte(cmdline(bootslot.A))},
	} {
		if got, err := bootslot.ReadCmdline(fileVol(t, files), bootslot.A); !errors.Is(err, bootslot.ErrLayout) {
			t.Errorf("%s: ReadCmdline = %q, %v; want ErrLayout", name, got, err)
		}
	}
}

// checkSelect selects slot b on a volume of files, checks that only the
// selectors changed, each to want[name], at its length, and that
// selecting a again restores the volume's bytes exactly.
func checkSelect(t *testing.T, size int64, files map[string][]byte, want map[string][]byte) {
	t.Helper()
	vol, ext := buildVol(t, size, files)
	orig := bytes.Clone(vol)
	before := sizes(t, vol)
	v := &countVol{Vol: vol, Left: -1}
	if err := bootslot.Select(v, bootslot.B); err != nil {
		t.Fatal(err)
	}
	for p, b := range files {
		w, ok := want[p]
		if !ok {
			w = b
		}
		if got := readFile(t, vol, p); !bytes.Equal(got, w) {
			t.Errorf("%s:\n%q\nwant\n%q", p, got, w)
		}
	}
	if got := sizes(t, vol); !maps.Equal(got, before) {
		t.Errorf("file sizes changed:\n%v\nwant\n%v", got, before)
	}
	if got, err := bootslot.Selected(vol); err != nil || got != bootslot.B {
		t.Errorf("Selected after Select(b) = %q, %v", got, err)
	}
	// One write of at most a sector per changed selector, at the start
	// of its data (a sector): a power cut leaves it old or new.
	written := map[string]bool{}
	for _, w := range v.Writes {
		name := ""
		for p := range want {
			if ext["/"+p].Offset == w.Off {
				name = p
			}
		}
		switch {
		case name == "":
			t.Errorf("a write of %d bytes at %d, which starts no selector", w.N, w.Off)
		case written[name]:
			t.Errorf("%s written twice", name)
		case w.N > 512 || w.Off%512 != 0:
			t.Errorf("%s written with %d bytes at %d: not within one sector", name, w.N, w.Off)
		}
		written[name] = true
	}
	if len(written) != len(want) {
		t.Errorf("%d writes for the %d selectors %v", len(v.Writes), len(want), v.Writes)
	}

	// Selecting b again writes nothing; selecting a restores every byte.
	v.Writes = nil
	if err := bootslot.Select(v, bootslot.B); err != nil || len(v.Writes) != 0 {
		t.Errorf("Select(b) again: %v, %d writes", err, len(v.Writes))
	}
	if err := bootslot.Select(v, bootslot.A); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vol, orig) {
		t.Errorf("Select(a) did not restore the volume: changed at %d bytes", len(differing(vol, orig)))
	}
}

func TestSelect(t *testing.T) {
	for _, size := range []int64{4 << 20, 64 << 20} { // 512-byte and 1 KiB clusters
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			t.Run("config.txt", func(t *testing.T) {
				checkSelect(t, size, piFiles(t), map[string][]byte{"config.txt": configTxt(t, bootslot.B)})
			})
			t.Run("loaders", func(t *testing.T) {
				checkSelect(t, size, loaderFiles(t), map[string][]byte{
					bootslot.Entry:    entry(t, bootslot.B, cmdline(bootslot.B)),
					bootslot.Syslinux: syslinux(t, bootslot.B, cmdline(bootslot.B)),
				})
			})
			t.Run("all three", func(t *testing.T) {
				files := loaderFiles(t)
				files["config.txt"] = configTxt(t, bootslot.A)
				checkSelect(t, size, files, map[string][]byte{
					"config.txt":      configTxt(t, bootslot.B),
					bootslot.Entry:    entry(t, bootslot.B, cmdline(bootslot.B)),
					bootslot.Syslinux: syslinux(t, bootslot.B, cmdline(bootslot.B)),
				})
			})
		})
	}

	// The loaders get the slot's command line as its cmdline.txt has it
	// now (the updater rewrote it with the slot's kernel).
	files := loaderFiles(t)
	long := cmdline(bootslot.B) + " quiet"
	files["b/cmdline.txt"] = pad(t, long+"\n")
	checkSelect(t, 4<<20, files, map[string][]byte{
		bootslot.Entry:    entry(t, bootslot.B, long),
		bootslot.Syslinux: syslinux(t, bootslot.B, long),
	})
}

// TestSelectRefused: a selection that cannot be made is refused with
// ErrLayout before anything is written.
func TestSelectRefused(t *testing.T) {
	c := cmdline(bootslot.B)
	// Fits neither loader's file: cmdline.txt holds it, the entry's 36
	// bytes of keys do not fit beside it.
	huge := c + " x=" + strings.Repeat("y", bootslot.PadSize-len(c)-5)
	for name, edit := range map[string]func(map[string][]byte){
		"no selectors": func(f map[string][]byte) {
			delete(f, bootslot.Entry)
			delete(f, bootslot.Syslinux)
			f["cmdline.txt"] = pad(t, c+"\n")
		},
		"no b/cmdline.txt":         func(f map[string][]byte) { delete(f, "b/cmdline.txt") },
		"an empty b/cmdline.txt":   func(f map[string][]byte) { f["b/cmdline.txt"] = pad(t, "\n") },
		"a command line too long":  func(f map[string][]byte) { f["b/cmdline.txt"] = pad(t, huge+"\n") },
		"an entry without options": func(f map[string][]byte) { f[bootslot.Entry] = pad(t, "title PC2\rlinux /a/vmlinuz\n") },
		"an old-layout entry":      func(f map[string][]byte) { f[bootslot.Entry] = pad(t, oldEntry(cmdline(bootslot.A))) },
	} {
		checkSelectRefused(t, name, edit)
	}
	vol, _ := buildVol(t, 4<<20, loaderFiles(t))
	orig := bytes.Clone(vol)
	for _, slot := range []string{"", "c", "A/"} {
		if err := bootslot.Select(vol, slot); !errors.Is(err, bootslot.ErrLayout) || !bytes.Equal(vol, orig) {
			t.Errorf("Select(%q) = %v (volume changed: %t), want ErrLayout", slot, err, !bytes.Equal(vol, orig))
		}
	}
	if err := bootslot.Select(memVol(make([]byte, 4<<20)), bootslot.B); err == nil {
		t.Error("Select on a volume without a file system: no error")
	}
}

// TestSelectAllOrNothing: when one selector cannot select the slot, no
// selector is written, so they never disagree because of a refusal.
func TestSelectAllOrNothing(t *testing.T) {
	c := cmdline(bootslot.B)
	// Fits the entry (36 bytes beside the command line), not
	// syslinux.cfg (98 bytes).
	mid := c + " x=" + strings.Repeat("y", bootslot.PadSize-len(entryText(bootslot.B, ""))-len(c)-3)
	for name, edit := range map[string]func(map[string][]byte){
		"a command line too long for syslinux.cfg": func(f map[string][]byte) { f["b/cmdline.txt"] = pad(t, mid+"\n") },
		"a syslinux.cfg without APPEND":            func(f map[string][]byte) { f[bootslot.Syslinux] = pad(t, "DEFAULT pc2\nLINUX /a/vmlinuz\n") },
		"a config.txt without os_prefix and an entry": func(f map[string][]byte) {
			delete(f, bootslot.Syslinux)
			f["config.txt"] = pad(t, "kernel=vmlinuz\n")
		},
	} {
		checkSelectRefused(t, name, edit)
	}
}

// checkSelectRefused selects slot b on loaderFiles changed by edit and
// checks that Select refuses with ErrLayout and writes nothing.
func checkSelectRefused(t *testing.T, name string, edit func(map[string][]byte)) {
	t.Helper()
	files := loaderFiles(t)
	edit(files)
	vol, _ := buildVol(t, 4<<20, files)
	orig := bytes.Clone(vol)
	if err := bootslot.Select(vol, bootslot.B); !errors.Is(err, bootslot.ErrLayout) {
		t.Errorf("%s: Select = %v, want ErrLayout", name, err)
	}
	if !bytes.Equal(vol, orig) {
		t.Errorf("%s: the refused Select changed the volume: the entry now names %q", name,
			bytes.SplitN(readFile(t, vol, bootslot.Entry), []byte("\r"), 3)[1])
	}
}

// TestSelectCut cuts the power after every write of a Select: each
// selector is whole, old or new, and the next Select completes the
// selection.
func TestSelectCut(t *testing.T) {
	files := loaderFiles(t)
	files["config.txt"] = configTxt(t, bootslot.A)
	old := map[string][]byte{"config.txt": files["config.txt"], bootslot.Entry: files[bootslot.Entry], bootslot.Syslinux: files[bootslot.Syslinux]}
	want := map[string][]byte{
		"config.txt":      configTxt(t, bootslot.B),
		bootslot.Entry:    entry(t, bootslot.B, cmdline(bootslot.B)),
		bootslot.Syslinux: syslinux(t, bootslot.B, cmdline(bootslot.B)),
	}
	for cut := 0; cut <= len(want); cut++ {
		vol, _ := buildVol(t, 4<<20, files)
		v := &countVol{Vol: vol, Left: cut}
		err := bootslot.Select(v, bootslot.B)
		if (err == nil) != (cut == len(want)) {
			t.Errorf("cut after %d writes: Select = %v", cut, err)
		}
		news := 0
		for p := range want {
			switch got := readFile(t, vol, p); {
			case bytes.Equal(got, want[p]):
				news++
			case !bytes.Equal(got, old[p]):
				t.Errorf("cut after %d writes: %s is neither old nor new: %q", cut, p, got)
			}
		}
		if news != cut {
			t.Errorf("cut after %d writes: %d selectors new", cut, news)
		}
		if _, err := bootslot.Selected(vol); (err == nil) != (cut == 0 || cut == len(want)) {
			t.Errorf("cut after %d writes: Selected = %v", cut, err)
		}
		v.Left = -1
		if err := bootslot.Select(v, bootslot.B); err != nil {
			t.Fatalf("cut after %d writes: Select again: %v", cut, err)
		}
		if got, err := bootslot.Selected(vol); err != nil || got != bootslot.B {
			t.Errorf("cut after %d writes, selected again: Selected = %q, %v", cut, got, err)
		}
	}
}

func TestRootPartition(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  int
	}{
		{gptRoot(2), 2},
		{gptRoot(3), 3},
		{"root=PARTUUID=" + strings.ToUpper(guid) + "/PARTNROFF=2", 3},
		{mbrRoot(2), 2},
		{mbrRoot(3), 3},
		{"root=PARTUUID=00000001-03", 3},
	} {
		if got, err := bootslot.RootPartition(tc.field); err != nil || got != tc.want {
			t.Errorf("RootPartition(%q) = %d, %v; want %d", tc.field, got, err, tc.want)
		}
	}
	for _, field := range []string{
		"",
		"root=/dev/mmcblk0p2",
		"root=UUID=" + guid,
		"PARTUUID=" + guid + "/PARTNROFF=1",
		"root=PARTUUID=" + guid + "/PARTNROFF=0", // partition 1, the boot partition
		"root=PARTUUID=" + guid + "/PARTNROFF=3",
		"root=PARTUUID=" + guid + "/PARTNROFF=-1",
		"root=PARTUUID=" + guid + "/PARTNROFF=",
		"root=PARTUUID=" + guid + "/PARTNROFF=x",
		"root=PARTUUID=" + guid, // a GUID without PARTNROFF: its last group is no partition
		"root=PARTUUID=" + sig + "-01",
		"root=PARTUUID=" + sig + "-04",
		"root=PARTUUID=" + sig + "-2",
		"root=PARTUUID=" + sig + "-002",
		"root=PARTUUID=-02",
		"root=PARTUUID=" + sig + "02",
	} {
		if n, err := bootslot.RootPartition(field); !errors.Is(err, bootslot.ErrLayout) {
			t.Errorf("RootPartition(%q) = %d, %v; want ErrLayout", field, n, err)
		}
	}
}

func TestWithPartition(t *testing.T) {
	for _, root := range []func(int) string{gptRoot, mbrRoot} {
		for _, from := range []int{2, 3} {
			for _, p := range []int{2, 3} {
				got, err := bootslot.WithPartition(root(from), p)
				if err != nil || got != root(p) {
					t.Errorf("WithPartition(%q, %d) = %q, %v; want %q", root(from), p, got, err, root(p))
				}
				if n, err := bootslot.RootPartition(got); err != nil || n != p {
					t.Errorf("RootPartition(%q) = %d, %v; want %d", got, n, err, p)
				}
			}
			for _, p := range []int{0, 1, 4} {
				if got, err := bootslot.WithPartition(root(from), p); err == nil {
					t.Errorf("WithPartition(%q, %d) = %q, want an error", root(from), p, got)
				}
			}
		}
	}
	for _, field := range []string{"root=/dev/sda2", "root=PARTUUID=" + sig + "-05", "root=PARTUUID=" + guid, ""} {
		if got, err := bootslot.WithPartition(field, 3); !errors.Is(err, bootslot.ErrLayout) {
			t.Errorf("WithPartition(%q, 3) = %q, %v; want ErrLayout", field, got, err)
		}
	}
}
