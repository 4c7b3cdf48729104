package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
)

// The Debian package Board.LinuxFirmware comes from: the Broadcom/Cypress
// Wi-Fi firmware of the Raspberry Pi (brcmfmac), from bookworm's
// non-free-firmware component. scripts/deps.sh downloads exactly this
// file to DefaultLinuxFirmwareDeb; Build checks its SHA-256 again, so a
// stale or altered file cannot change the image.
const (
	LinuxFirmwarePackage = "firmware-brcm80211"
	LinuxFirmwareVersion = "20230210-5"
	LinuxFirmwareSHA256  = "602b8c2dd176edbb187fe8d0d2ad8fadbfb7885e5fc3425b579c2d36ec72aa19"
	// DefaultLinuxFirmwareDeb is where scripts/deps.sh puts the package.
	DefaultLinuxFirmwareDeb = "/var/cache/pc2/" + LinuxFirmwarePackage + "_" + LinuxFirmwareVersion + "_all.deb"
)

// linuxFirmware returns the contents of names (paths relative to
// /lib/firmware) from the firmware package at deb, after checking the
// package's SHA-256. A name that is a symbolic link in the package gets the
// bytes of the file it points to.
//
// dpkg-deb (on every Debian) unpacks the data archive to a tar stream,
// whatever its compression (bookworm's is xz, which Go's standard library
// cannot read); archive/tar reads that stream in memory, so no link in the
// package is ever followed on the host.
func linuxFirmware(ctx context.Context, deb string, names []string) (map[string][]byte, error) {
	data, err := os.ReadFile(deb)
	if err != nil {
		return nil, fmt.Errorf("linux firmware: %w; run scripts/deps.sh (as root), which downloads Debian's %s %s there",
			err, LinuxFirmwarePackage, LinuxFirmwareVersion)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != LinuxFirmwareSHA256 {
		return nil, fmt.Errorf("linux firmware: %s has SHA-256 %x, want %s (%s %s); run scripts/deps.sh (as root) to download it again",
			deb, sum, LinuxFirmwareSHA256, LinuxFirmwarePackage, LinuxFirmwareVersion)
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", "/dev/stdin")
	cmd.Stdin = bytes.NewReader(data) // the bytes just checked
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("linux firmware: dpkg-deb --fsys-tarfile %s: %w\n%s", deb, err, stderr.Bytes())
	}
	files, err := firmwareFromTar(bytes.NewReader(out), names)
	if err != nil {
		return nil, fmt.Errorf("linux firmware: %s: %w", deb, err)
	}
	return files, nil
}

// firmwareFromTar picks names out of a package's data tar. The firmware
// directory is lib/firmware (bookworm) or usr/lib/firmware (merged /usr,
// trixie and later). Links are resolved inside that directory only.
func firmwareFromTar(r io.Reader, names []string) (map[string][]byte, error) {
	regular := map[string][]byte{}
	links := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		name = strings.TrimPrefix(name, "usr/")
		rel, ok := strings.CutPrefix(name, "lib/firmware/")
		if !ok {
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			regular[rel] = b
		case tar.TypeSymlink:
			links[rel] = h.Linkname
		}
	}
	files := map[string][]byte{}
	for _, n := range names {
		cur := n
		for hops := 0; ; hops++ {
			if b, ok := regular[cur]; ok {
				files[n] = b
				break
			}
			target, ok := links[cur]
			switch {
			case !ok:
				return nil, fmt.Errorf("%s (via %s) is not in the package", n, cur)
			case hops == 8:
				return nil, fmt.Errorf("%s: too many links", n)
			case path.IsAbs(target):
				// An absolute link names a path on the installed system.
				t := strings.TrimPrefix(path.Clean(target), "/usr")
				rel, ok := strings.CutPrefix(t, "/lib/firmware/")
				if !ok {
					return nil, fmt.Errorf("%s: link %s -> %s leaves /lib/firmware", n, cur, target)
				}
				cur = rel
			default:
				cur = path.Join(path.Dir(cur), target)
				if cur == ".." || strings.HasPrefix(cur, "../") {
					return nil, fmt.Errorf("%s: link -> %s leaves /lib/firmware", n, target)
				}
			}
		}
	}
	return files, nil
}
