package update_test

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/updatetest"
)

func gptRoot(p int) string { return updatetest.GPTRoot(updatetest.DevGUID, p) }

// cmdlineFiles are the three kinds of command line files, each naming
// the slot of the partition root names.
var cmdlineFiles = []struct {
	name string
	file func(tb testing.TB, slot, root string) []byte
}{
	{"cmdline.txt", func(tb testing.TB, _, root string) []byte { return updatetest.CmdlineTxt(tb, root) }},
	{"gokrazy.conf", updatetest.Entry},
	{"syslinux.cfg", updatetest.SyslinuxCfg},
}

func TestRootField(t *testing.T) {
	for _, f := range cmdlineFiles {
		for _, root := range []string{gptRoot(2), gptRoot(3), updatetest.MBRRoot(2), updatetest.MBRRoot(3)} {
			if got, err := update.RootField(f.file(t, bootslot.A, root)); err != nil || got != root {
				t.Errorf("%s: rootField = %q, %v; want %q", f.name, got, err, root)
			}
		}
	}
	for _, tc := range []struct{ name, data, want string }{
		// root= inside another field is not the root field.
		{"lookalike first", "console=tty1 xroot=PARTUUID=zz-02 " + updatetest.MBRRoot(3) + "\n", updatetest.MBRRoot(3)},
		{"first on its line", updatetest.MBRRoot(2) + " rootwait\n  ", updatetest.MBRRoot(2)},
		{"after a '\\r' line", "title PC2\r" + updatetest.MBRRoot(3) + " rootwait\n", updatetest.MBRRoot(3)},
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
	for _, f := range cmdlineFiles {
		t.Run(f.name, func(t *testing.T) {
			for _, root := range []func(int) string{gptRoot, updatetest.MBRRoot} {
				orig := f.file(t, bootslot.A, root(2))
				// Only root= changes: the other lines (with their '\r')
				// and the file's length stay.
				got, err := update.EditCmdline(orig, update.SetRoot(root(3)))
				if err != nil {
					t.Fatal(err)
				}
				if want := f.file(t, bootslot.A, root(3)); !bytes.Equal(got, want) {
					t.Errorf("root 2 to 3:\n%q\nwant\n%q", got, want)
				}
				if len(got) != len(orig) {
					t.Errorf("edited file is %d bytes, want %d", len(got), len(orig))
				}
				back, err := update.EditCmdline(got, update.SetRoot(root(2)))
				if err != nil || !bytes.Equal(back, orig) {
					t.Errorf("switching back: %q, %v; want the original", back, err)
				}
			}
			// The padding absorbs a longer root= (another disk's kind)
			// and gives the room back.
			mbr := f.file(t, bootslot.A, updatetest.MBRRoot(2))
			got, err := update.EditCmdline(mbr, update.SetRoot(gptRoot(2)))
			if want := f.file(t, bootslot.A, gptRoot(2)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("MBR to GPT root=: %q, %v; want %q", got, err, want)
			}
			if back, err := update.EditCmdline(got, update.SetRoot(updatetest.MBRRoot(2))); err != nil || !bytes.Equal(back, mbr) {
				t.Errorf("GPT back to MBR root=: %q, %v; want the original", back, err)
			}
		})
	}

	if got, err := update.EditCmdline(updatetest.Entry(t, bootslot.A, gptRoot(2)), update.SetRoot(gptRoot(3))); err != nil ||
		!bytes.HasPrefix(got, []byte("title PC2\rlinux /a/vmlinuz\roptions console=")) {
		t.Errorf("gokrazy.conf lost its '\\r' lines: %q, %v", got, err)
	}

	// No padding: a root= of the same length fits, a longer one does
	// not, and nothing is returned.
	tight := []byte(updatetest.KernelCmdline(updatetest.MBRRoot(2)) + "\n")
	if got, err := update.EditCmdline(tight, update.SetRoot(updatetest.MBRRoot(3))); err != nil || string(got) != updatetest.KernelCmdline(updatetest.MBRRoot(3))+"\n" {
		t.Errorf("switching an unpadded file = %q, %v", got, err)
	}
	if got, err := update.EditCmdline(tight, update.SetRoot(gptRoot(3))); !errors.Is(err, update.ErrBootConfig) || got != nil {
		t.Errorf("a longer root= in an unpadded file = %q, %v; want ErrBootConfig", got, err)
	}
	for name, data := range map[string]string{
		// gokrazy.conf with '\r' only: no '\n' ends the command line.
		"no final newline": "title PC2\roptions " + updatetest.KernelCmdline(gptRoot(2)) + "\r   ",
		"no root=":         updatetest.KernelCmdline("rootwait") + "\n",
		"no line end":      updatetest.KernelCmdline(gptRoot(2)),
	} {
		if got, err := update.EditCmdline([]byte(data), update.SetRoot(gptRoot(3))); !errors.Is(err, update.ErrBootConfig) || got != nil {
			t.Errorf("%s: editCmdline = %q, %v; want ErrBootConfig", name, got, err)
		}
	}
}

// pcVolume is the volume of an x86 boot partition whose partition 2's
// root= is root2, built from files edited by edit (may be nil).
func pcVolume(t *testing.T, root2 string, edit func(map[string][]byte)) (*updatetest.MemVolume, map[string][]byte) {
	t.Helper()
	files := updatetest.PCBootFiles(t, root2, updatetest.KernelOf("1.0.0"), updatetest.KernelOf("1.1.0"), updatetest.SettingsJSON(`{"a":1}`))
	if edit != nil {
		edit(files)
	}
	vol, _ := updatetest.BuildVolume(t, files)
	return &updatetest.MemVolume{B: vol}, files
}

func TestReadBootConfig(t *testing.T) {
	v, _ := pcVolume(t, gptRoot(2), nil)
	if c, err := update.ReadBootConfig(v); err != nil || c != (update.BootConfig{Slot: bootslot.A, Partition: 2}) {
		t.Errorf("readBootConfig = %+v, %v; want slot a, partition 2", c, err)
	}
	v, _ = pcVolume(t, updatetest.MBRRoot(2), func(f map[string][]byte) {
		f[bootslot.Entry] = updatetest.Entry(t, bootslot.B, updatetest.MBRRoot(3))
		f[bootslot.Syslinux] = updatetest.SyslinuxCfg(t, bootslot.B, updatetest.MBRRoot(3))
	})
	if c, err := update.ReadBootConfig(v); err != nil || c != (update.BootConfig{Slot: bootslot.B, Partition: 3}) {
		t.Errorf("readBootConfig = %+v, %v; want slot b, partition 3", c, err)
	}

	for name, edit := range map[string]func(map[string][]byte){
		"entry and syslinux.cfg disagree": func(f map[string][]byte) {
			f[bootslot.Entry] = updatetest.Entry(t, bootslot.B, gptRoot(3))
		},
		// Before the A/B layout: the kernel and cmdline.txt at the
		// partition's root, nothing that selects a slot.
		"old layout, cmdline.txt only": func(f map[string][]byte) {
			clear(f)
			f["cmdline.txt"] = updatetest.CmdlineTxt(t, gptRoot(2))
			f["vmlinuz"] = []byte("kernel")
		},
		"old layout, loaders": func(f map[string][]byte) {
			f["cmdline.txt"] = updatetest.CmdlineTxt(t, gptRoot(2))
			f[bootslot.Entry] = bytes.ReplaceAll(f[bootslot.Entry], []byte("/a/vmlinuz"), []byte("/vmlinuz"))
			f[bootslot.Syslinux] = bytes.ReplaceAll(f[bootslot.Syslinux], []byte("/a/vmlinuz"), []byte("/vmlinuz"))
		},
		"a broken syslinux.cfg": func(f map[string][]byte) { f[bootslot.Syslinux] = []byte("DEFAULT pc2\n") },
	} {
		v, _ := pcVolume(t, gptRoot(2), edit)
		if c, err := update.ReadBootConfig(v); !errors.Is(err, update.ErrBootConfig) {
			t.Errorf("%s: readBootConfig = %+v, %v; want ErrBootConfig", name, c, err)
		}
	}
}

// fileSizes returns the length of every file of vol.
func fileSizes(t *testing.T, vol []byte) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	if err := fat16.Walk(bytes.NewReader(vol), func(p string, n int64) error { out[p] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSelectRoot(t *testing.T) {
	for _, tc := range []struct {
		name string
		root func(p int) string
	}{
		{"GPT", gptRoot},
		{"MBR", updatetest.MBRRoot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, files := pcVolume(t, tc.root(2), nil)
			orig := bytes.Clone(v.B)
			sizes := fileSizes(t, orig)

			if err := update.SelectRoot(v, 3); err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{
				bootslot.Entry:    updatetest.Entry(t, bootslot.B, tc.root(3)),
				bootslot.Syslinux: updatetest.SyslinuxCfg(t, bootslot.B, tc.root(3)),
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
			if got := fileSizes(t, v.B); !maps.Equal(got, sizes) {
				t.Errorf("file sizes changed:\n%v\nwant\n%v", got, sizes)
			}
			if c, err := update.ReadBootConfig(v); err != nil || c != (update.BootConfig{Slot: bootslot.B, Partition: 3}) {
				t.Errorf("after selectRoot(3): %+v, %v", c, err)
			}

			// Selecting 3 again changes nothing; 2 restores every byte.
			after := bytes.Clone(v.B)
			if err := update.SelectRoot(v, 3); err != nil || !bytes.Equal(v.B, after) {
				t.Errorf("selectRoot(3) again: %v, changed %t", err, !bytes.Equal(v.B, after))
			}
			if err := update.SelectRoot(v, 2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v.B, orig) {
				t.Error("selectRoot(2) did not restore the volume's bytes")
			}
		})
	}

	// Selectors a power cut left disagreeing (between the entry's write
	// and syslinux.cfg's) are made to agree.
	v, files := pcVolume(t, gptRoot(2), func(f map[string][]byte) {
		f[bootslot.Entry] = updatetest.Entry(t, bootslot.B, gptRoot(3))
	})
	if err := update.SelectRoot(v, 2); err != nil {
		t.Fatal(err)
	}
	if got, want := updatetest.ReadVolFile(t, v.B, bootslot.Entry), updatetest.Entry(t, bootslot.A, gptRoot(2)); !bytes.Equal(got, want) {
		t.Errorf("entry:\n%q\nwant\n%q", got, want)
	}
	if got := updatetest.ReadVolFile(t, v.B, bootslot.Syslinux); !bytes.Equal(got, files[bootslot.Syslinux]) {
		t.Errorf("syslinux.cfg changed: %q", got)
	}
}

// TestSelectRootRefused: a selection that cannot be made is refused
// before anything is written; a boot partition's refusals wrap
// ErrBootConfig.
func TestSelectRootRefused(t *testing.T) {
	root := gptRoot(2)
	for name, edit := range map[string]func(map[string][]byte){
		"old layout, cmdline.txt only": func(f map[string][]byte) {
			clear(f)
			f["cmdline.txt"] = updatetest.CmdlineTxt(t, root)
			f["vmlinuz"] = []byte("kernel")
		},
		"old layout entry": func(f map[string][]byte) {
			f[bootslot.Entry] = bytes.ReplaceAll(f[bootslot.Entry], []byte("/a/vmlinuz"), []byte("/vmlinuz"))
		},
		"no b/cmdline.txt": func(f map[string][]byte) { delete(f, "b/cmdline.txt") },
		"an entry without options": func(f map[string][]byte) {
			f[bootslot.Entry] = updatetest.Padded(t, "title PC2\rlinux /a/vmlinuz\n")
		},
		"slot b's command line does not fit the entry": func(f map[string][]byte) {
			c := updatetest.KernelCmdline(gptRoot(3))
			f["b/cmdline.txt"] = updatetest.Padded(t, c+" x="+strings.Repeat("y", 500-len(c))+"\n")
		},
	} {
		v, _ := pcVolume(t, root, edit)
		orig := bytes.Clone(v.B)
		if err := update.SelectRoot(v, 3); !errors.Is(err, update.ErrBootConfig) {
			t.Errorf("%s: selectRoot = %v, want ErrBootConfig", name, err)
		}
		if !bytes.Equal(v.B, orig) {
			t.Errorf("%s: the refused selectRoot changed the volume", name)
		}
	}
	v, _ := pcVolume(t, root, nil)
	orig := bytes.Clone(v.B)
	for _, p := range []int{0, 1, 4} {
		if err := update.SelectRoot(v, p); err == nil || !bytes.Equal(v.B, orig) {
			t.Errorf("selectRoot(%d) = %v (volume changed: %t), want an error", p, err, !bytes.Equal(v.B, orig))
		}
	}
}
