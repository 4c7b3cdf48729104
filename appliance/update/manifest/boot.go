package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"

	"github.com/pc2/pc2/image/fat16"
)

// The files of a boot partition that differ between devices of one
// release, and so are not part of its payload (BootPayload).
var (
	// CmdlineFiles hold the kernel command line, which names the disk's
	// root partition, as image.Build writes them: cmdline.txt first (read
	// by gokrazy's init, the Pi firmware and image/vm's direct kernel
	// boot), then systemd-boot's entry (UEFI) and SYSLINUX's configuration
	// (legacy BIOS). Each is padded with spaces after its final newline,
	// so edits that change the length stay inside the file.
	CmdlineFiles = []string{"cmdline.txt", "loader/entries/gokrazy.conf", "syslinux.cfg"}
)

// SettingsFile is the device settings on the boot partition (package
// settings' BootFile; named here so the format does not depend on it).
const SettingsFile = "pc2-settings.json"

// BootPayload returns the SHA-256 (hex) of each file of a boot partition
// by path, without the files that differ between devices of one release
// (CmdlineFiles and SettingsFile): the boot artifact's Files.
func BootPayload(vol io.ReaderAt) (map[string]string, error) {
	out := map[string]string{}
	skip := map[string]bool{SettingsFile: true}
	for _, p := range CmdlineFiles {
		skip[p] = true
	}
	err := fat16.Walk(vol, func(p string, size int64) error {
		if skip[strings.ToLower(strings.TrimPrefix(p, "/"))] {
			return nil
		}
		b, err := fat16.ReadFile(vol, p)
		if err != nil {
			return err
		}
		h := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "/")] = hex.EncodeToString(h[:])
		return nil
	})
	return out, err
}
