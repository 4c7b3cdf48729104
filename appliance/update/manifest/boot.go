package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
)

// SettingsFile is the device settings on the boot partition (package
// settings' BootFile; named here so the format does not depend on it).
const SettingsFile = "pc2-settings.json"

// Syslinux's ldlinux.sys records its own sectors: where SYSLINUX's
// installer put it on each image (after the other files, so it moves
// whenever a kernel's size changes). It is the device's own, like the
// settings: left out of BootPayload and never replaced by an update
// (ldlinux.c32, loaded by name, tells a new SYSLINUX version).
const SyslinuxLoader = "ldlinux.sys"

// SlotPrefix keys the files of a boot slot in BootPayload ("slot/vmlinuz"
// is the slot's kernel, whichever slot it is).
const SlotPrefix = "slot/"

// BootPayload returns the SHA-256 (hex) of each file of a boot partition
// in the A/B layout (package bootslot) that is the same on every device
// of a release: the files of slot (the selected one when slot is "")
// keyed SlotPrefix+name, with cmdline.txt hashed without its root= field
// (it names the device's disk); config.txt hashed as if it selected slot
// a; and every file outside the slots except the settings file,
// ldlinux.sys (SyslinuxLoader) and the boot loaders' selectors
// (loader/entries/gokrazy.conf, syslinux.cfg), which are made from the
// slot's cmdline.txt. The other slot is left
// out: it holds the version the device returns to. This is the boot
// artifact's Files, and what a device compares with its slot to write.
func BootPayload(vol io.ReaderAt, slot string) (map[string]string, error) {
	if slot == "" {
		s, err := bootslot.Selected(vol)
		if err != nil {
			return nil, err
		}
		slot = s
	}
	out := map[string]string{}
	err := fat16.Walk(vol, func(p string, size int64) error {
		key := strings.TrimPrefix(p, "/")
		lower := strings.ToLower(key)
		s, name, inSlot := bootslot.Split(key)
		switch {
		case inSlot && s != slot:
			return nil
		case inSlot:
			key = SlotPrefix + name
		case lower == SettingsFile || lower == SyslinuxLoader || lower == bootslot.Entry || lower == bootslot.Syslinux:
			return nil
		}
		b, err := fat16.ReadFile(vol, p)
		if err != nil {
			return err
		}
		switch {
		case inSlot && strings.EqualFold(name, bootslot.Cmdline):
			b = []byte(withoutRoot(string(b)))
		case lower == bootslot.ConfigTxt:
			if b, err = bootslot.Selection(bootslot.ConfigTxt, b, bootslot.A, ""); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		h := sha256.Sum256(b)
		out[key] = hex.EncodeToString(h[:])
		return nil
	})
	return out, err
}

// withoutRoot returns a cmdline.txt's first line without its root= field
// and without padding.
func withoutRoot(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	var keep []string
	for _, f := range strings.Fields(first) {
		if !strings.HasPrefix(f, "root=") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}
