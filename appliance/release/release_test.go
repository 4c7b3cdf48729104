package release

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/boards/rpi"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
)

// TestRPiBundleBootFiles: the boot partition an rpi release bundle carries
// (what an over-the-air update writes to a Pi) holds everything every
// supported Pi model needs, its manifest describes it, and its
// cmdline.txt selects root A by the MBR's PARTUUID form.
func TestRPiBundleBootFiles(t *testing.T) {
	if _, err := os.Stat(image.DefaultLinuxFirmwareDeb); err != nil {
		testenv.SkipOrFail(t, "rpi images need the Wi-Fi firmware package (scripts/deps.sh): %v", err)
	}
	for _, tool := range []string{"mksquashfs", "mkfs.ext4", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "%s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	res, err := Build(context.Background(), Options{Board: rpi.Board, Version: "1.0.0",
		Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)), Out: dir, ModuleDir: "../..",
		SourceDateEpoch: 1700000000, RootSize: 128 * image.MiB,
		Logger: slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	boot, err := os.ReadFile(filepath.Join(dir, BootFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(boot)
	if a := res.Manifest.Artifacts[manifest.Boot]; a.SHA256 != hex.EncodeToString(sum[:]) || a.Size != int64(len(boot)) || res.Manifest.Board != "rpi" {
		t.Fatalf("manifest %+v does not describe %s (%d bytes)", res.Manifest, BootFile, len(boot))
	}
	files := map[string][]byte{}
	vol := bytes.NewReader(boot)
	err = fat16.Walk(vol, func(p string, _ int64) error {
		b, err := fat16.ReadFile(vol, p)
		files["/"+p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rpi.Board.CheckBootFiles(files); err != nil {
		t.Errorf("bundle's boot partition: %v", err)
	}
	for _, m := range rpi.Models {
		if len(files["/a/"+m.DeviceTree]) == 0 {
			t.Errorf("%s: no a/%s", m.Name, m.DeviceTree)
		}
	}
	cmdline, _, _ := strings.Cut(string(files["/a/cmdline.txt"]), "\n")
	if !strings.HasPrefix(cmdline, "root=PARTUUID=") || !strings.Contains(cmdline, "-02 ") {
		t.Errorf("a/cmdline.txt %q does not select root A (MBR form)", cmdline)
	}
	if !strings.HasPrefix(string(files["/config.txt"]), "os_prefix=a/\n") {
		t.Errorf("config.txt does not select slot a:\n%s", files["/config.txt"])
	}
}
