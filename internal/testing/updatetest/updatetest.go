// Package updatetest is the fixtures of the over-the-air update tests
// (packages update, updateapi and pull): an appliance disk made of files
// (a FAT16 boot partition like image.Build writes, two root partitions and
// the updater's directory on perm), signed release bundles for it, and the
// init's start of a test boot.
package updatetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/provisioning/identity"
)

// Disk identifiers of the fake boot partitions: the device's own disk
// GUID and MBR signature, and the GUID of the disk a release was built
// on (which a device must not take over).
const (
	DevGUID = "5c1e0b9a-3d2f-4a67-8e4b-9f0a1b2c3d4e"
	RelGUID = "0fedcba9-8765-4321-a0b1-c2d3e4f5a6b7"
	DevMBR  = "1a2b3c4d"
)

// cmdlinePadded is the size image.Build pads the command line files to
// (image.cmdlineFileSize).
const cmdlinePadded = 512

// BootVolSize is the fake boot partitions' size: the smallest FAT16
// volume has 4085 clusters, so 4 MiB (512-byte clusters) is plenty.
const BootVolSize = 4 << 20

// Board is the fake device's board.
const Board = "testpc"

// RootPartSize is the size of the fake root partitions.
const RootPartSize = 3 << 20

// The updater's files on perm that the fixtures look at, as
// docs/architecture.md lists them.
const (
	stateFile  = "state.json"
	stagingDir = "staging"
)

// Now is the fake device's clock.
func Now() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }

// GPTRoot is the GPT form of root= for partition p of the disk whose
// partition 1 has the GUID guid.
func GPTRoot(guid string, p int) string {
	return fmt.Sprintf("root=PARTUUID=%s/PARTNROFF=%d", guid, p-1)
}

// MBRRoot is the MBR form of root= for partition p.
func MBRRoot(p int) string { return fmt.Sprintf("root=PARTUUID=%s-%02x", DevMBR, p) }

// KernelCmdline is a kernel command line as gokrazy's image has it.
func KernelCmdline(root string) string {
	return "console=ttyS0,115200 console=tty1 " + root + " init=/gokrazy/init rootwait panic=10 oops=panic"
}

// Padded pads s with spaces to 512 bytes, as image.Build does.
func Padded(tb testing.TB, s string) []byte {
	tb.Helper()
	if len(s) > cmdlinePadded {
		tb.Fatalf("%d bytes do not fit %d", len(s), cmdlinePadded)
	}
	return []byte(s + strings.Repeat(" ", cmdlinePadded-len(s)))
}

// CmdlineTxt, Entry and SyslinuxCfg are the command line files as
// image/boot.go and image/bios.go write them: a slot's cmdline.txt, and
// the loaders' selectors naming slot's kernel with the command line
// whose root= is root.
func CmdlineTxt(tb testing.TB, root string) []byte {
	tb.Helper()
	return Padded(tb, KernelCmdline(root)+"\n")
}

func Entry(tb testing.TB, slot, root string) []byte {
	tb.Helper()
	return Padded(tb, "title PC2\rlinux /"+slot+"/vmlinuz\roptions "+KernelCmdline(root)+"\n")
}

func SyslinuxCfg(tb testing.TB, slot, root string) []byte {
	tb.Helper()
	return Padded(tb, strings.Join([]string{
		"SERIAL 0 115200", "DEFAULT pc2", "PROMPT 0", "NOESCAPE 1", "ALLOWOPTIONS 0",
		"LABEL pc2", "LINUX /" + slot + "/vmlinuz", "APPEND " + KernelCmdline(root),
	}, "\n")+"\n")
}

// SettingsJSON is a device settings file padded to 16 KiB, as image.Build
// reserves room for it.
func SettingsJSON(s string) []byte {
	return append([]byte(s), bytes.Repeat([]byte(" "), 16<<10-len(s))...)
}

// PCBootFiles returns the files of an x86 boot partition (UEFI and BIOS)
// in the A/B layout of image/bootslot: slot a (root partition 2) holds
// kernelA, slot b kernelB, the cmdline.txt of each names its partition
// of the disk whose root= for partition 2 is root2, and the selectors
// name slot a.
func PCBootFiles(tb testing.TB, root2 string, kernelA, kernelB, settings []byte) map[string][]byte {
	tb.Helper()
	root3, err := bootslot.WithPartition(root2, 3)
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string][]byte{
		"a/vmlinuz":                   kernelA,
		"a/cmdline.txt":               CmdlineTxt(tb, root2),
		"b/vmlinuz":                   kernelB,
		"b/cmdline.txt":               CmdlineTxt(tb, root3),
		"EFI/BOOT/BOOTX64.EFI":        []byte("systemd-boot, not really"),
		"loader/loader.conf":          []byte("default gokrazy.conf\ntimeout 0\neditor no\n"),
		"loader/entries/gokrazy.conf": Entry(tb, bootslot.A, root2),
		"syslinux.cfg":                SyslinuxCfg(tb, bootslot.A, root2),
		"ldlinux.sys":                 bytes.Repeat([]byte("ldlinux"), 1000),
		"ldlinux.c32":                 bytes.Repeat([]byte("ldlinux.c32 "), 500),
	}
	if settings != nil {
		files[manifest.SettingsFile] = settings
	}
	return files
}

// BuildVolume returns a FAT16 volume of BootVolSize bytes holding files,
// and the extent of each (by path with a leading slash).
func BuildVolume(tb testing.TB, files map[string][]byte) ([]byte, map[string]fat16.Extent) {
	tb.Helper()
	fs := fat16.New(fat16.Options{Size: BootVolSize, Label: "PC2BOOT", VolumeID: 0x2025, ModTime: time.Unix(1700000000, 0)})
	for p, b := range files {
		fs.Add(p, b)
	}
	img, ext, err := fs.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return img, ext
}

// MemVolume is a boot volume in memory.
type MemVolume struct{ B []byte }

func (v *MemVolume) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(v.B)) {
		return 0, fmt.Errorf("read at %d past the volume's end", off)
	}
	n := copy(p, v.B[off:])
	if n < len(p) {
		return n, fmt.Errorf("short read at %d", off)
	}
	return n, nil
}

func (v *MemVolume) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(v.B)) {
		return 0, fmt.Errorf("write at %d past the volume's end", off)
	}
	return copy(v.B[off:], p), nil
}

// ReadVolFile reads one file of vol.
func ReadVolFile(tb testing.TB, vol []byte, name string) []byte {
	tb.Helper()
	b, err := fat16.ReadFile(bytes.NewReader(vol), name)
	if err != nil {
		tb.Fatalf("read %s: %v", name, err)
	}
	return b
}

// ReleaseKey returns the release key made from a fixed seed.
func ReleaseKey(tb testing.TB, seed byte) (ed25519.PrivateKey, identity.ID) {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		tb.Fatal(err)
	}
	return key, id
}

// KernelOf is a fake kernel of version v.
func KernelOf(v string) []byte { return bytes.Repeat([]byte("vmlinuz "+v+" "), 3000) }

// RootPattern is what root partition p holds before any update.
func RootPattern(p int) []byte {
	b := make([]byte, RootPartSize)
	for i := range b {
		b[i] = byte(i%251) ^ byte(p<<4)
	}
	return b
}

// SHA256 hashes b (hex), as a manifest lists it.
func SHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Device is an appliance disk made of files: the boot partition (a
// FAT16 volume like image.Build writes, running root 2) and the two root
// partitions, plus the updater's directory on perm.
type Device struct {
	tb       testing.TB
	Dir      string // the updater's directory
	Boot     string
	Roots    [2]string
	Files    map[string][]byte // of the boot partition as built
	Ext      map[string]fat16.Extent
	Settings []byte
	Key      ed25519.PrivateKey // the trusted release key
	KeyID    identity.ID
}

// NewDevice returns a device in a temporary folder of tb.
func NewDevice(tb testing.TB) *Device {
	tb.Helper()
	tmp := tb.TempDir()
	d := &Device{
		tb:       tb,
		Dir:      filepath.Join(tmp, "perm", "pc2", "update"),
		Boot:     filepath.Join(tmp, "p1"),
		Roots:    [2]string{filepath.Join(tmp, "p2"), filepath.Join(tmp, "p3")},
		Settings: SettingsJSON(`{"hostname":"the-device","update":{"url":"https://example.org/"}}`),
	}
	d.Key, d.KeyID = ReleaseKey(tb, 7)
	d.Files = PCBootFiles(tb, GPTRoot(DevGUID, 2), KernelOf("1.0.0"), KernelOf("1.0.0"), d.Settings)
	vol, ext := BuildVolume(tb, d.Files)
	d.Ext = ext
	for path, b := range map[string][]byte{d.Boot: vol, d.Roots[0]: RootPattern(2), d.Roots[1]: RootPattern(3)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

// Disk is the device booted on root partition running.
func (d *Device) Disk(running int) *update.Disk {
	return &update.Disk{Boot: d.Boot, Roots: d.Roots, Running: running}
}

// RunningRelease is the release.json of version v (its min_version is
// "1.0.0").
func RunningRelease(v string) manifest.ReleaseInfo {
	return manifest.ReleaseInfo{Version: v, Board: Board, Channel: manifest.Stable, MinVersion: "1.0.0"}
}

// Updater returns an Updater of the device booted on partition running
// with release rel; edit may change its options.
func (d *Device) Updater(running int, rel manifest.ReleaseInfo, edit func(*update.Options)) *update.Updater {
	d.tb.Helper()
	opts := update.Options{
		Dir:           d.Dir,
		Disk:          d.Disk(running),
		Release:       rel,
		Keys:          []identity.ID{d.KeyID},
		HealthTimeout: 90 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(d.tb.Output(), nil)),
		Now:           Now,
	}
	if edit != nil {
		edit(&opts)
	}
	u, err := update.New(opts)
	if err != nil {
		d.tb.Fatal(err)
	}
	return u
}

// Snapshot returns the three partitions' bytes.
func (d *Device) Snapshot() [3][]byte {
	d.tb.Helper()
	var out [3][]byte
	for i, p := range []string{d.Boot, d.Roots[0], d.Roots[1]} {
		b, err := os.ReadFile(p)
		if err != nil {
			d.tb.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// CheckUntouched checks that no partition changed since before and that
// nothing is left staged.
func (d *Device) CheckUntouched(before [3][]byte) {
	d.tb.Helper()
	for i, b := range d.Snapshot() {
		if !bytes.Equal(b, before[i]) {
			d.tb.Errorf("partition %d was written", i+1)
		}
	}
	d.CheckNoStaging()
}

// CheckNoStaging checks that the updater left no staging folder.
func (d *Device) CheckNoStaging() {
	d.tb.Helper()
	if _, err := os.Stat(filepath.Join(d.Dir, stagingDir)); !errors.Is(err, os.ErrNotExist) {
		d.tb.Errorf("staging folder: %v, want it gone", err)
	}
}

// State reads the updater's state file (none: the zero State).
func (d *Device) State() *update.State {
	d.tb.Helper()
	var st update.State
	if err := config.Load(filepath.Join(d.Dir, stateFile), &st); err != nil && !errors.Is(err, config.ErrNotConfigured) {
		d.tb.Fatal(err)
	}
	return &st
}

// BootFile reads a file of the boot partition.
func (d *Device) BootFile(name string) []byte {
	d.tb.Helper()
	vol, err := os.ReadFile(d.Boot)
	if err != nil {
		d.tb.Fatal(err)
	}
	return ReadVolFile(d.tb, vol, name)
}

// CheckSelected checks that the boot partition selects root partition p:
// the loaders' selectors name p's slot and its command line, and each
// slot's cmdline.txt names its own partition of the device's disk.
func (d *Device) CheckSelected(p int) {
	d.tb.Helper()
	slot, err := bootslot.Of(p)
	if err != nil {
		d.tb.Fatal(err)
	}
	root := GPTRoot(DevGUID, p)
	for name, want := range map[string][]byte{
		"a/cmdline.txt":               CmdlineTxt(d.tb, GPTRoot(DevGUID, 2)),
		"b/cmdline.txt":               CmdlineTxt(d.tb, GPTRoot(DevGUID, 3)),
		"loader/entries/gokrazy.conf": Entry(d.tb, slot, root),
		"syslinux.cfg":                SyslinuxCfg(d.tb, slot, root),
	} {
		if got := d.BootFile(name); !bytes.Equal(got, want) {
			d.tb.Errorf("%s:\n%q\nwant\n%q", name, got, want)
		}
	}
}

// BeginTestBoot starts the init of the version on partition running, as
// cmd/pc2-init does (update.BeginTestBoot), with a clock that does not
// wait and a reboot that counts; it returns the deadline's watcher.
func (d *Device) BeginTestBoot(running int, rebooted *int) func() error {
	d.tb.Helper()
	watch, err := update.BeginTestBoot(update.GateOptions{
		Dir: d.Dir, Disk: d.Disk(running), Sleep: func(time.Duration) {},
		Reboot: func() error { *rebooted++; return nil },
	})
	if err != nil {
		d.tb.Fatalf("BeginTestBoot: %v", err)
	}
	return watch
}

// RelSpec describes a fake release.
type RelSpec struct {
	Version, MinVersion string
	Board               string // default Board
	Kernel              []byte // default the device's slot a's
	Untrimmed           bool   // the boot artifact keeps its trailing zeros
	Key                 ed25519.PrivateKey
	Edit                func(*manifest.Manifest)
}

// Release is a signed release bundle in a folder.
type Release struct {
	Dir        string
	Manifest   *manifest.Manifest
	Raw, Sig   []byte // the manifest's bytes and signature
	Root, Boot []byte // the artifacts
}

// Release writes the bundle of s to dir: a root "squashfs" of
// random bytes and a boot partition built on another disk (its root= names
// RelGUID) with a placeholder settings file.
func (d *Device) Release(dir string, s RelSpec) *Release {
	d.tb.Helper()
	tb := d.tb
	if s.Board == "" {
		s.Board = Board
	}
	if s.Kernel == nil {
		s.Kernel = d.Files["a/vmlinuz"]
	}
	if s.Key == nil {
		s.Key = d.Key
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	var seed [32]byte
	copy(seed[:], s.Version)
	root := make([]byte, 3<<19+333)
	rand.NewChaCha8(seed).Read(root)
	vol, _ := BuildVolume(tb, PCBootFiles(tb, GPTRoot(RelGUID, 2), s.Kernel, s.Kernel, SettingsJSON(`{}`)))
	boot := vol
	if !s.Untrimmed {
		// As pc2 release writes it: without the trailing zero blocks.
		n := len(boot)
		for n > 0 && !slices.ContainsFunc(boot[n-4096:n], func(c byte) bool { return c != 0 }) {
			n -= 4096
		}
		boot = boot[:n]
	}
	r := &Release{Dir: dir, Root: root, Boot: boot}
	arts := map[string]manifest.Artifact{}
	for name, b := range map[string][]byte{manifest.Root: root, manifest.Boot: boot} {
		p := filepath.Join(dir, name+".img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			tb.Fatal(err)
		}
		a, err := manifest.Describe(p)
		if err != nil {
			tb.Fatal(err)
		}
		arts[name] = a
	}
	files, err := manifest.BootPayload(bytes.NewReader(vol), "")
	if err != nil {
		tb.Fatal(err)
	}
	a := arts[manifest.Boot]
	a.Files = files
	arts[manifest.Boot] = a
	r.Manifest = &manifest.Manifest{Format: manifest.Format, Version: s.Version, Board: s.Board, Channel: manifest.Stable,
		MinVersion: s.MinVersion, Created: Now().Add(-time.Hour), Artifacts: arts}
	if s.Edit != nil {
		s.Edit(r.Manifest)
	}
	if r.Raw, r.Sig, err = manifest.Sign(r.Manifest, s.Key); err != nil {
		tb.Fatal(err)
	}
	for name, b := range map[string][]byte{manifest.ManifestFile: r.Raw, manifest.SignatureFile: r.Sig} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

// Fetcher serves artifacts from memory and records what was asked.
type Fetcher struct {
	Arts  map[string]io.Reader
	mu    sync.Mutex
	asked []string
}

// Fetcher serves r's artifacts.
func (r *Release) Fetcher() *Fetcher {
	return &Fetcher{Arts: map[string]io.Reader{manifest.Root: bytes.NewReader(r.Root), manifest.Boot: bytes.NewReader(r.Boot)}}
}

// Fetch is an update.Fetch.
func (f *Fetcher) Fetch(_ context.Context, name string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, name)
	r, ok := f.Arts[name]
	if !ok {
		return nil, fmt.Errorf("no %s here", name)
	}
	return io.NopCloser(r), nil
}

// Names are the artifacts asked for, in order.
func (f *Fetcher) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// InstallRelease installs r on u from memory and returns the fetcher.
func InstallRelease(tb testing.TB, u *update.Updater, r *Release) *Fetcher {
	tb.Helper()
	f := r.Fetcher()
	m, err := u.Install(tb.Context(), "push", r.Raw, r.Sig, f.Fetch)
	if err != nil {
		tb.Fatalf("Install %s: %v", r.Manifest.Version, err)
	}
	if m.Version != r.Manifest.Version {
		tb.Fatalf("Install returned %s, want %s", m.Version, r.Manifest.Version)
	}
	return f
}
