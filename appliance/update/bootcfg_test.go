package update_test

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/updatetest"
)

func TestRootPartition(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  int
	}{
		{updatetest.GPTRoot(updatetest.DevGUID, 2), 2},
		{updatetest.GPTRoot(updatetest.DevGUID, 3), 3},
		{"root=PARTUUID=" + strings.ToUpper(updatetest.DevGUID) + "/PARTNROFF=2", 3},
		{updatetest.MBRRoot(2), 2},
		{updatetest.MBRRoot(3), 3},
		{"root=PARTUUID=1a2b3c4d-02", 2},
	} {
		got, err := update.RootPartition(tc.field)
		if err != nil || got != tc.want {
			t.Errorf("rootPartition(%q) = %d, %v; want %d", tc.field, got, err, tc.want)
		}
	}
	for _, field := range []string{
		"",
		"root=/dev/mmcblk0p2",
		"root=UUID=" + updatetest.DevGUID,
		"PARTUUID=" + updatetest.DevGUID + "/PARTNROFF=1",
		"root=PARTUUID=" + updatetest.DevGUID + "/PARTNROFF=0", // partition 1, the boot partition
		"root=PARTUUID=" + updatetest.DevGUID + "/PARTNROFF=3",
		"root=PARTUUID=" + updatetest.DevGUID + "/PARTNROFF=",
		"root=PARTUUID=" + updatetest.DevGUID + "/PARTNROFF=x",
		"root=PARTUUID=" + updatetest.DevGUID, // a GUID without PARTNROFF: its last group is no partition
		"root=PARTUUID=1a2b3c4d-01",
		"root=PARTUUID=1a2b3c4d-04",
		"root=PARTUUID=1a2b3c4d-2",
		"root=PARTUUID=1a2b3c4d-002",
		"root=PARTUUID=-02",
		"root=PARTUUID=1a2b3c4d02",
	} {
		if n, err := update.RootPartition(field); !errors.Is(err, update.ErrBootConfig) {
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
		{updatetest.GPTRoot(updatetest.DevGUID, 2), 3, updatetest.GPTRoot(updatetest.DevGUID, 3)},
		{updatetest.GPTRoot(updatetest.DevGUID, 3), 2, updatetest.GPTRoot(updatetest.DevGUID, 2)},
		{updatetest.GPTRoot(updatetest.DevGUID, 2), 2, updatetest.GPTRoot(updatetest.DevGUID, 2)},
		{updatetest.MBRRoot(2), 3, updatetest.MBRRoot(3)},
		{updatetest.MBRRoot(3), 2, updatetest.MBRRoot(2)},
		{updatetest.MBRRoot(3), 3, updatetest.MBRRoot(3)},
	} {
		got, err := update.WithPartition(tc.field, tc.p)
		if err != nil || got != tc.want {
			t.Errorf("withPartition(%q, %d) = %q, %v; want %q", tc.field, tc.p, got, err, tc.want)
		}
		if n, err := update.RootPartition(got); err != nil || n != tc.p {
			t.Errorf("rootPartition(%q) = %d, %v; want %d", got, n, err, tc.p)
		}
	}
	for _, field := range []string{"root=/dev/sda2", "root=PARTUUID=1a2b3c4d-05", "root=PARTUUID=" + updatetest.DevGUID} {
		if got, err := update.WithPartition(field, 3); !errors.Is(err, update.ErrBootConfig) {
			t.Errorf("withPartition(%q, 3) = %q, %v; want ErrBootConfig", field, got, err)
		}
	}
}

func TestRootField(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"cmdline.txt", string(updatetest.CmdlineTxt(t, updatetest.GPTRoot(updatetest.DevGUID, 2))), updatetest.GPTRoot(updatetest.DevGUID, 2)},
		{"gokrazy.conf", string(updatetest.GokrazyConf(t, updatetest.MBRRoot(3))), updatetest.MBRRoot(3)},
		{"syslinux.cfg", string(updatetest.SyslinuxCfg(t, updatetest.GPTRoot(updatetest.DevGUID, 3))), updatetest.GPTRoot(updatetest.DevGUID, 3)},
		// root= inside another field is not the root field.
		{"lookalike first", "console=tty1 xroot=PARTUUID=zz-02 " + updatetest.MBRRoot(3) + "\n", updatetest.MBRRoot(3)},
		{"first on its line", updatetest.MBRRoot(2) + " rootwait\n  ", updatetest.MBRRoot(2)},
	} {
		got, err := update.RootField([]byte(tc.data))
		if err != nil || got != tc.want {
			t.Errorf("%s: rootField = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	for _, data := range []string{
		"",
		"console=tty1 rootwait\n",
		"console=tty1 xroot=PARTUUID=zz-02\n",
		"console=tty1 " + updatetest.MBRRoot(2), // no line end
	} {
		if got, err := update.RootField([]byte(data)); !errors.Is(err, update.ErrBootConfig) {
			t.Errorf("rootField(%q) = %q, %v; want ErrBootConfig", data, got, err)
		}
	}
}

func TestEditCmdline(t *testing.T) {
	root2, root3 := updatetest.GPTRoot(updatetest.DevGUID, 2), updatetest.GPTRoot(updatetest.DevGUID, 3)
	for _, tc := range []struct {
		name string
		file func(testing.TB, string) []byte
	}{
		{"cmdline.txt", updatetest.CmdlineTxt},
		{"gokrazy.conf", updatetest.GokrazyConf},
		{"syslinux.cfg", updatetest.SyslinuxCfg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := tc.file(t, root2)

			// The test-boot flag goes at the end of the command line,
			// before its '\n', and the file keeps its length.
			try, err := update.EditCmdline(orig, update.AddTryInactive)
			if err != nil {
				t.Fatal(err)
			}
			if len(try) != len(orig) {
				t.Errorf("flagged file is %d bytes, want %d", len(try), len(orig))
			}
			if want := updatetest.GokrazyTryEdit(t, orig); !bytes.Equal(try, want) {
				t.Errorf("flagged file:\n%q\nwant\n%q", try, want)
			}
			again, err := update.EditCmdline(try, update.AddTryInactive)
			if err != nil || !bytes.Equal(again, try) {
				t.Errorf("flagging twice: %q, %v; want it unchanged", again, err)
			}

			// Switching roots keeps the other lines (with their '\r')
			// and removes the flags, gokrazy's as well as ours.
			for _, in := range [][]byte{orig, try, updatetest.GokrazySwitchEdit(t, try), updatetest.GokrazySwitchEdit(t, updatetest.GokrazyTryEdit(t, orig))} {
				got, err := update.EditCmdline(in, update.SetRoot(root3))
				if err != nil {
					t.Fatal(err)
				}
				if want := tc.file(t, root3); !bytes.Equal(got, want) {
					t.Errorf("switched %q:\n%q\nwant\n%q", in, got, want)
				}
				back, err := update.EditCmdline(got, update.SetRoot(root2))
				if err != nil || !bytes.Equal(back, orig) {
					t.Errorf("switching back: %q, %v; want the original", back, err)
				}
			}
		})
	}

	if got, err := update.EditCmdline(updatetest.GokrazyConf(t, root2), update.SetRoot(root3)); err != nil ||
		!bytes.HasPrefix(got, []byte("title PC2\rlinux /vmlinuz\roptions console=")) {
		t.Errorf("gokrazy.conf lost its '\\r' lines: %q, %v", got, err)
	}

	// No padding: the flag does not fit, and nothing is returned.
	tight := []byte(updatetest.KernelCmdline(root2) + "\n")
	if got, err := update.EditCmdline(tight, update.AddTryInactive); !errors.Is(err, update.ErrBootConfig) || got != nil {
		t.Errorf("editing an unpadded file = %q, %v; want ErrBootConfig", got, err)
	}
	// A shorter line (root= of the same length, flags gone) still fits.
	if got, err := update.EditCmdline(tight, update.SetRoot(root3)); err != nil || string(got) != updatetest.KernelCmdline(root3)+"\n" {
		t.Errorf("switching an unpadded file = %q, %v", got, err)
	}
	// gokrazy.conf with '\r' only: the command line has no '\n' to end it.
	if got, err := update.EditCmdline([]byte("title PC2\roptions "+updatetest.KernelCmdline(root2)+"\r   "), update.AddTryInactive); !errors.Is(err, update.ErrBootConfig) {
		t.Errorf("a command line without a final newline = %q, %v; want ErrBootConfig", got, err)
	}
}

func TestReadBootConfig(t *testing.T) {
	root2 := updatetest.GPTRoot(updatetest.DevGUID, 2)
	files := updatetest.PCBootFiles(t, root2, []byte("kernel"), updatetest.SettingsJSON(`{}`))
	for _, tc := range []struct {
		name           string
		edit           func(map[string][]byte)
		testBoot, flag bool
	}{
		{"clean", func(map[string][]byte) {}, false, false},
		{"try on cmdline.txt", func(f map[string][]byte) { f["cmdline.txt"] = updatetest.GokrazyTryEdit(t, f["cmdline.txt"]) }, true, true},
		{"switched", func(f map[string][]byte) {
			f["cmdline.txt"] = updatetest.GokrazySwitchEdit(t, updatetest.GokrazyTryEdit(t, f["cmdline.txt"]))
		}, false, true},
		// gokrazy's init reads the try flag only from cmdline.txt.
		{"try on gokrazy.conf", func(f map[string][]byte) {
			f["loader/entries/gokrazy.conf"] = updatetest.GokrazyTryEdit(t, f["loader/entries/gokrazy.conf"])
		}, false, true},
		{"try on syslinux.cfg", func(f map[string][]byte) { f["syslinux.cfg"] = updatetest.GokrazyTryEdit(t, f["syslinux.cfg"]) }, false, true},
	} {
		f := maps.Clone(files)
		tc.edit(f)
		vol, _ := updatetest.BuildVolume(t, f)
		c, err := update.ReadBootConfig(&updatetest.MemVolume{B: vol})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := update.BootConfig{Root: root2, Partition: 2, TestBoot: tc.testBoot, Flags: tc.flag}
		if c != want {
			t.Errorf("%s: readBootConfig = %+v, want %+v", tc.name, c, want)
		}
	}

	// Only cmdline.txt must be there (a Pi has no other).
	vol, _ := updatetest.BuildVolume(t, map[string][]byte{"cmdline.txt": updatetest.Padded(t, updatetest.KernelCmdline(updatetest.MBRRoot(3))+"\n"), "kernel8.img": []byte("k")})
	if c, err := update.ReadBootConfig(&updatetest.MemVolume{B: vol}); err != nil || c.Partition != 3 || c.Root != updatetest.MBRRoot(3) {
		t.Errorf("Pi boot partition: %+v, %v", c, err)
	}
	for name, f := range map[string]map[string][]byte{
		"no cmdline.txt":      {"vmlinuz": []byte("k"), "syslinux.cfg": updatetest.SyslinuxCfg(t, root2)},
		"no root=":            {"cmdline.txt": updatetest.Padded(t, "console=tty1 rootwait\n")},
		"root= of no root":    {"cmdline.txt": updatetest.Padded(t, "root=/dev/sda2 rootwait\n")},
		"a broken other file": {"cmdline.txt": updatetest.CmdlineTxt(t, root2), "syslinux.cfg": []byte("DEFAULT pc2\n")},
	} {
		vol, _ := updatetest.BuildVolume(t, f)
		if c, err := update.ReadBootConfig(&updatetest.MemVolume{B: vol}); !errors.Is(err, update.ErrBootConfig) {
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
		{"GPT 2 to 3", func(p int) string { return updatetest.GPTRoot(updatetest.DevGUID, p) }, 2, 3},
		{"GPT 3 to 2", func(p int) string { return updatetest.GPTRoot(updatetest.DevGUID, p) }, 3, 2},
		{"MBR 2 to 3", updatetest.MBRRoot, 2, 3},
		{"MBR 3 to 3", updatetest.MBRRoot, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := updatetest.PCBootFiles(t, tc.root(tc.from), []byte("kernel"), updatetest.SettingsJSON(`{"a":1}`))
			// A test boot in progress, with flags on every file.
			files["cmdline.txt"] = updatetest.GokrazySwitchEdit(t, updatetest.GokrazyTryEdit(t, files["cmdline.txt"]))
			files["syslinux.cfg"] = updatetest.GokrazyTryEdit(t, files["syslinux.cfg"])
			files["loader/entries/gokrazy.conf"] = updatetest.GokrazyTryEdit(t, files["loader/entries/gokrazy.conf"])
			vol, _ := updatetest.BuildVolume(t, files)
			v := &updatetest.MemVolume{B: bytes.Clone(vol)}
			if err := update.SelectRoot(v, tc.sel); err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{
				"cmdline.txt":                 updatetest.CmdlineTxt(t, tc.root(tc.sel)),
				"loader/entries/gokrazy.conf": updatetest.GokrazyConf(t, tc.root(tc.sel)),
				"syslinux.cfg":                updatetest.SyslinuxCfg(t, tc.root(tc.sel)),
			}
			for p, w := range want {
				if got := updatetest.ReadVolFile(t, v.B, p); !bytes.Equal(got, w) {
					t.Errorf("%s:\n%q\nwant\n%q", p, got, w)
				}
			}
			for p, b := range files {
				if _, ok := want[p]; !ok && !bytes.Equal(updatetest.ReadVolFile(t, v.B, p), b) {
					t.Errorf("%s changed", p)
				}
			}
			c, err := update.ReadBootConfig(v)
			if err != nil || c.Partition != tc.sel || c.Flags || c.TestBoot {
				t.Errorf("after selectRoot(%d): %+v, %v", tc.sel, c, err)
			}
		})
	}
}

func TestEnableTestBoot(t *testing.T) {
	files := updatetest.PCBootFiles(t, updatetest.GPTRoot(updatetest.DevGUID, 2), []byte("kernel"), updatetest.SettingsJSON(`{}`))
	vol, ext := updatetest.BuildVolume(t, files)
	v := &updatetest.MemVolume{B: bytes.Clone(vol)}
	if err := update.EnableTestBoot(v); err != nil {
		t.Fatal(err)
	}
	if got, want := updatetest.ReadVolFile(t, v.B, "cmdline.txt"), updatetest.GokrazyTryEdit(t, files["cmdline.txt"]); !bytes.Equal(got, want) {
		t.Errorf("cmdline.txt:\n%q\nwant\n%q", got, want)
	}
	// Not a byte outside cmdline.txt's data changed (same length: not
	// even its directory entry).
	e := ext["/cmdline.txt"]
	if !bytes.Equal(v.B[:e.Offset], vol[:e.Offset]) || !bytes.Equal(v.B[e.Offset+e.Length:], vol[e.Offset+e.Length:]) {
		t.Error("enableTestBoot wrote outside cmdline.txt")
	}
	c, err := update.ReadBootConfig(v)
	if want := (update.BootConfig{Root: updatetest.GPTRoot(updatetest.DevGUID, 2), Partition: 2, TestBoot: true, Flags: true}); err != nil || c != want {
		t.Errorf("readBootConfig = %+v, %v; want %+v", c, err, want)
	}
	// Twice: no second flag.
	before := bytes.Clone(v.B)
	if err := update.EnableTestBoot(v); err != nil || !bytes.Equal(v.B, before) {
		t.Errorf("enableTestBoot again: %v, changed %t", err, !bytes.Equal(v.B, before))
	}
}

// TestBootEditRefused: an edit that does not fit a file, or a file
// without a proper command line, is refused with ErrBootConfig before
// anything is written.
func TestBootEditRefused(t *testing.T) {
	root := updatetest.GPTRoot(updatetest.DevGUID, 2)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		edit  func(fat16.ReadWriterAt) error
	}{
		{"flag on unpadded cmdline.txt", map[string][]byte{"cmdline.txt": []byte(updatetest.KernelCmdline(root) + "\n"), "vmlinuz": []byte("k")}, update.EnableTestBoot},
		{"cmdline.txt without newline", map[string][]byte{"cmdline.txt": []byte(updatetest.KernelCmdline(root) + "   ")}, update.EnableTestBoot},
		{"syslinux.cfg without newline", map[string][]byte{
			"cmdline.txt": updatetest.CmdlineTxt(t, root), "syslinux.cfg": []byte("APPEND " + updatetest.KernelCmdline(root)),
		}, func(v fat16.ReadWriterAt) error { return update.SelectRoot(v, 3) }},
		{"no root= on gokrazy.conf", map[string][]byte{
			"cmdline.txt": updatetest.CmdlineTxt(t, root), "loader/entries/gokrazy.conf": updatetest.Padded(t, "title PC2\rlinux /vmlinuz\roptions rootwait\n"),
		}, func(v fat16.ReadWriterAt) error { return update.SelectRoot(v, 3) }},
	} {
		vol, _ := updatetest.BuildVolume(t, tc.files)
		v := &updatetest.MemVolume{B: bytes.Clone(vol)}
		if err := tc.edit(v); !errors.Is(err, update.ErrBootConfig) {
			t.Errorf("%s: %v, want ErrBootConfig", tc.name, err)
		}
		if !bytes.Equal(v.B, vol) {
			t.Errorf("%s: the refused edit changed the volume", tc.name)
		}
	}
}
