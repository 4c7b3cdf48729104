package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// needFirmwareDeb skips (fails under CI=true) without the firmware
// package that scripts/deps.sh downloads.
func needFirmwareDeb(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultLinuxFirmwareDeb); err != nil {
		testenv.SkipOrFail(t, "%v (run scripts/deps.sh as root)", err)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testenv.SkipOrFail(t, "dpkg-deb missing (apt-get install dpkg)")
	}
}

// packageFirmware unpacks the firmware package with dpkg-deb -x, the
// reference for the builder's own tar reading, and returns its
// /lib/firmware directory.
func packageFirmware(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", DefaultLinuxFirmwareDeb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	return filepath.Join(dir, "lib/firmware")
}

// TestLinuxFirmwarePackage reads the rpi board's firmware from the pinned
// package and compares it with what dpkg-deb -x unpacks (whose links the
// host file system follows).
func TestLinuxFirmwarePackage(t *testing.T) {
	needFirmwareDeb(t)
	got, err := linuxFirmware(context.Background(), DefaultLinuxFirmwareDeb, rpi.Board.LinuxFirmware)
	if err != nil {
		t.Fatal(err)
	}
	ref := packageFirmware(t)
	total := 0
	for _, name := range rpi.Board.LinuxFirmware {
		want, err := os.ReadFile(filepath.Join(ref, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[name], want) {
			t.Errorf("%s: %d bytes, want the package's %d", name, len(got[name]), len(want))
		}
		total += len(want)
		t.Logf("%s: %d bytes", name, len(want))
	}
	if total > 2<<20 {
		t.Errorf("rpi firmware is %d bytes; only what the models need should be shipped", total)
	}
}

func TestLinuxFirmwareErrors(t *testing.T) {
	ctx := context.Background()
	_, err := linuxFirmware(ctx, filepath.Join(t.TempDir(), "missing.deb"), []string{"brcm/x.bin"})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "scripts/deps.sh") {
		t.Errorf("missing package: %v, want fs.ErrNotExist and a hint to run scripts/deps.sh", err)
	}
	other := filepath.Join(t.TempDir(), "other.deb")
	if err := os.WriteFile(other, []byte("!<arch>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := linuxFirmware(ctx, other, []string{"brcm/x.bin"}); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("package with another hash: %v, want a SHA-256 mismatch", err)
	}
}

// TestFirmwareFromTar: links are followed inside the firmware directory
// only, in both the bookworm and the merged-/usr layout.
func TestFirmwareFromTar(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, typ byte, body, link string) {
		h := &tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: 0o644, Size: int64(len(body))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add("./etc/passwd", tar.TypeReg, "root:x:0:0", "")
	add("./lib/firmware/cypress/a.bin", tar.TypeReg, "A", "")
	add("./lib/firmware/brcm/a.bin", tar.TypeSymlink, "", "../cypress/a.bin")
	add("./lib/firmware/brcm/a.txt", tar.TypeReg, "nvram", "")
	add("./lib/firmware/brcm/b.txt", tar.TypeSymlink, "", "a.txt")
	add("./usr/lib/firmware/brcm/abs.bin", tar.TypeSymlink, "", "/lib/firmware/cypress/a.bin")
	add("./lib/firmware/brcm/escape", tar.TypeSymlink, "", "../../../etc/passwd")
	add("./lib/firmware/brcm/abs-escape", tar.TypeSymlink, "", "/etc/passwd")
	add("./lib/firmware/brcm/loop", tar.TypeSymlink, "", "loop")
	add("./lib/firmware/brcm/dangling", tar.TypeSymlink, "", "nothing")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := firmwareFromTar(bytes.NewReader(buf.Bytes()), []string{"brcm/a.bin", "brcm/b.txt", "brcm/abs.bin", "cypress/a.bin"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"brcm/a.bin": "A", "brcm/b.txt": "nvram", "brcm/abs.bin": "A", "cypress/a.bin": "A"} {
		if string(got[name]) != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	for _, bad := range []string{"brcm/escape", "brcm/abs-escape", "brcm/loop", "brcm/dangling", "brcm/none.bin"} {
		if got, err := firmwareFromTar(bytes.NewReader(buf.Bytes()), []string{bad}); err == nil {
			t.Errorf("%s: got %q, want an error", bad, got[bad])
		}
	}
}

// checkRootFirmware checks the root file system's /lib/firmware against
// the package: every file of opts.Board.LinuxFirmware with the package's
// bytes, mode 0644, and every link as a link to its target.
func checkRootFirmware(t *testing.T, res *Result, opts Options) {
	t.Helper()
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		testenv.SkipOrFail(t, "unsquashfs missing (apt-get install squashfs-tools)")
	}
	x := filepath.Join(t.TempDir(), "x")
	if out, err := exec.Command("unsquashfs", "-d", x, res.Root, "lib/firmware").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	ref := packageFirmware(t)
	for _, name := range opts.Board.LinuxFirmware {
		p := filepath.Join(x, "lib/firmware", name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("root: %v", err)
			continue
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
			t.Errorf("/lib/firmware/%s: mode %v, want a regular file, 0644", name, st.Mode())
		}
		got, _ := os.ReadFile(p)
		want, err := os.ReadFile(filepath.Join(ref, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("/lib/firmware/%s: %d bytes differ from the package's %d", name, len(got), len(want))
		}
	}
	for link, target := range opts.Board.LinuxFirmwareLinks {
		got, err := os.Readlink(filepath.Join(x, "lib/firmware", link))
		if err != nil || got != target {
			t.Errorf("/lib/firmware/%s -> %q (%v), want -> %s", link, got, err, target)
		}
	}
	t.Logf("/lib/firmware: %d files and %d links checked", len(opts.Board.LinuxFirmware), len(opts.Board.LinuxFirmwareLinks))
}

// TestDepsScriptPin: scripts/deps.sh downloads the package this package
// expects, to the default path.
func TestDepsScriptPin(t *testing.T) {
	script, err := os.ReadFile("../scripts/deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"fw_dir=" + filepath.Dir(DefaultLinuxFirmwareDeb) + "\n",
		"fw_deb=$fw_dir/" + filepath.Base(DefaultLinuxFirmwareDeb) + "\n",
		"fw_sha=" + LinuxFirmwareSHA256 + "\n",
		LinuxFirmwarePackage + "=" + LinuxFirmwareVersion,
	} {
		if !bytes.Contains(script, []byte(want)) {
			t.Errorf("scripts/deps.sh lacks %q", want)
		}
	}
}
