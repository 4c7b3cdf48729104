// Package image builds bootable gokrazy disk images for the PC2 appliance
// without the gok tool (which is not available to this project).
//
// Build cross-compiles the init (cmd/pc2-init), gokrazy's dhcp, ntp and
// randomd and the caller's programs, packs them into a squashfs root file
// system, writes a FAT16 boot partition with what the board's boot method
// needs (systemd-boot, or the kernel alone for direct kernel boot, or the
// Pi firmware, device trees and config.txt), and assembles a GPT (or, on
// the Pi, MBR) disk; for the x86 board:
//
//	p1  boot    FAT16, EFI system partition: boot slots a/ and b/
//	            (vmlinuz, cmdline.txt; package bootslot),
//	            EFI/BOOT/BOOTX64.EFI, loader/loader.conf,
//	            loader/entries/gokrazy.conf; for legacy BIOS boot
//	            (bios.go) also syslinux.cfg, ldlinux.sys, ldlinux.c32
//	p2  root A  squashfs (the built root)
//	p3  root B  squashfs slot, left empty; the updater fills it
//	p4  perm    ext4, formatted at build time (gokrazy never formats it)
//
// Decisions, and why:
//
//   - Partition table: GPT, except for boards that set Board.MBR (the
//     Raspberry Pi: the Pi 3 family's boot ROM reads only MBR). The MBR has
//     the same four partitions (boot type 0x0e FAT16 LBA, the others 0x83)
//     and a disk signature derived like the GUIDs; root= is then
//     root=PARTUUID=<signature>-02, the MBR form of the kernel and
//     gokrazy's init.
//   - Root selection: root=PARTUUID=<GUID of p1>/PARTNROFF=1. On a GPT disk
//     the kernel's PARTUUID is the partition's GUID, so the MBR-style
//     PARTUUID=<disk signature>-02 form cannot match; the PARTNROFF form is
//     the GPT form that gokrazy's init (github.com/gokrazy/internal/rootdev)
//     also understands; slot b's cmdline.txt names PARTNROFF=2.
//   - Boot partition: FAT16 written by package fat16, whose in-place
//     readers and writers (and gokrazy's) understand only that, in the
//     A/B layout of package bootslot: two kernel sets and one-sector
//     selectors, padded with spaces after the final newline so that a
//     switch is one in-place write. In gokrazy.conf the lines before
//     "options" end in '\r', which systemd-boot accepts as a line end.
//   - squashfs: mksquashfs from squashfs-tools with gzip (zlib, which the
//     kernel.amd64 config enables) and -reproducible; see writeSquashfs for
//     why not go-diskfs.
//   - GPT: go-diskfs with GUIDs derived from a hash of the inputs (or from
//     Options.DiskGUIDSeed), so identical inputs give identical disks.
//   - perm: mkfs.ext4 from e2fsprogs with -E offset= straight into the image,
//     with a fixed UUID, hash seed and E2FSPROGS_FAKE_TIME. e2fsprogs is the
//     reference implementation the kernel is tested against, and the
//     go-diskfs ext4 writer is still young; perm holds the user's data, so
//     its format is where we least want surprises.
//   - The image is written sparsely: all-zero 4 KiB blocks are skipped, so
//     empty root B and unused space cost no disk.
//   - /lib/firmware (firmware.go): only the files Board.LinuxFirmware
//     names (the Pi's Wi-Fi firmware), read from one pinned Debian package
//     whose SHA-256 Build checks, so the root stays small and reproducible.
package image

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pc2/pc2/boards"
)

// MiB is a mebibyte, for sizes.
const MiB = 1 << 20

// Default partition sizes. Boot holds one kernel (about 17 MB) with room for
// a bigger one; root holds the squashfs (about 30 MB with gokrazy's
// services) with room for our programs; perm is grown by nothing at runtime,
// so its size is the data budget.
const (
	DefaultBootSize = 100 * MiB
	DefaultRootSize = 500 * MiB
	DefaultPermSize = 256 * MiB
)

// InitPackage is the init cross-compiled to /gokrazy/init.
const InitPackage = "github.com/pc2/pc2/cmd/pc2-init"

// GokrazyServices are gokrazy's own programs, installed under /gokrazy and
// supervised by the init.
var GokrazyServices = map[string]string{
	"ntp":     "github.com/gokrazy/gokrazy/cmd/ntp",
	"randomd": "github.com/gokrazy/gokrazy/cmd/randomd",
}

// External is a Go program of another module.
type External struct {
	Module  string // e.g. github.com/restic/restic
	Version string // an exact version, e.g. v0.18.1
	Package string // the main package's directory in the module, e.g. cmd/restic
}

// Options configure Build. The zero value of every field except Board and
// Output is usable.
type Options struct {
	// Board selects GOARCH, kernel and boot configuration.
	Board boards.Board
	// Programs maps a name under /user to the Go package built there.
	Programs map[string]string
	// External maps a name under /user to a program of another Go
	// module, built from the module proxy at a pinned version in its own
	// module (its go.mod and go.sum, never this module's), as gokrazy
	// builds any Go program.
	External map[string]External
	// ExtraFiles maps absolute paths in the root file system to contents,
	// e.g. /etc/gokr-pw.txt (the web interface password; without it gokrazy
	// does not listen on TCP) or /etc/hostname (default "pc2").
	ExtraFiles map[string][]byte
	// PermFiles are written into the perm partition when it is formatted,
	// keyed by path relative to /perm (e.g. "pc2/node.key" for a node key
	// provisioned at build time). Modes are kept; owner is root.
	PermFiles map[string]PermFile
	// BootFiles are added to the boot partition's root directory, keyed by
	// absolute path (e.g. "/pc2-settings.json", the device settings). They
	// cannot replace a file the board's boot method needs.
	BootFiles map[string][]byte
	// SourceDateEpoch is the timestamp, in seconds since 1970, used for
	// every file and for the build timestamp (see SourceDateEpochFromEnv).
	SourceDateEpoch int64
	// Output is the disk image path. root.squashfs and boot.img, the
	// artifacts an update pushes, are written to the same directory.
	Output string
	// BootSize, RootSize (each of root A and B) and PermSize are partition
	// sizes in bytes, multiples of 1 MiB; zero means the default.
	BootSize, RootSize, PermSize int64
	// DiskGUIDSeed, if set, replaces the hash of the inputs as the source of
	// the disk and partition GUIDs, e.g. to give each device its own.
	DiskGUIDSeed string
	// ModuleDir is a directory inside the Go module that provides the
	// programs and the kernel module version (go.mod); default ".".
	ModuleDir string
	// LinuxFirmwareDeb is the path of the Debian package that
	// Board.LinuxFirmware comes from (LinuxFirmwarePackage, checked against
	// LinuxFirmwareSHA256); default DefaultLinuxFirmwareDeb, where
	// scripts/deps.sh puts it. Unused for boards without LinuxFirmware.
	LinuxFirmwareDeb string
	// Vars are string variables of the programs set at link time
	// (go build -ldflags -X name=value), e.g. a version.
	Vars map[string]string
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// PermFile is a file placed on the perm partition at build time.
type PermFile struct {
	Data []byte
	Mode fs.FileMode // permission bits; 0 means 0600
}

// Result describes a built image.
type Result struct {
	Image, Root, Boot string // paths
	// DiskGUID and PartGUIDs are the GPT GUIDs; on an MBR disk, the disk
	// signature (8 hex digits) and the kernel's PARTUUIDs (<signature>-0N).
	DiskGUID  string
	PartGUIDs [4]string
	Cmdline   string // kernel command line, without padding
	RootBytes int64  // size of the squashfs
}

// ErrInvalidOptions is wrapped by Build's option errors.
var ErrInvalidOptions = errors.New("image: invalid options")

// SourceDateEpochFromEnv returns $SOURCE_DATE_EPOCH, or def when unset.
func SourceDateEpochFromEnv(def int64) (int64, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return def, nil
	}
	var n int64
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
	}
	return n, nil
}

func (o *Options) setDefaults() error {
	if err := o.Board.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	if o.Output == "" {
		return fmt.Errorf("%w: no output path", ErrInvalidOptions)
	}
	for _, s := range []*int64{&o.BootSize, &o.RootSize, &o.PermSize} {
		if *s == 0 {
			continue
		}
		if *s%MiB != 0 {
			return fmt.Errorf("%w: partition size %d is not a multiple of 1 MiB", ErrInvalidOptions, *s)
		}
	}
	if o.BootSize == 0 {
		o.BootSize = cmp.Or(o.Board.BootSize, DefaultBootSize)
	}
	if o.RootSize == 0 {
		o.RootSize = DefaultRootSize
	}
	if o.PermSize == 0 {
		o.PermSize = DefaultPermSize
	}
	// 64 MiB keeps FAT16 clusters at 1 KiB or more, so the padded command
	// line files always have cluster slack behind them (see bootFiles).
	if o.BootSize < 64*MiB {
		return fmt.Errorf("%w: boot partition below 64 MiB", ErrInvalidOptions)
	}
	if o.ModuleDir == "" {
		o.ModuleDir = "."
	}
	if o.LinuxFirmwareDeb == "" {
		o.LinuxFirmwareDeb = DefaultLinuxFirmwareDeb
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for name := range o.Programs {
		if name == "" || strings.ContainsAny(name, "/ ") || name == "." || name == ".." {
			return fmt.Errorf("%w: program name %q", ErrInvalidOptions, name)
		}
	}
	for name, e := range o.External {
		switch {
		case name == "" || strings.ContainsAny(name, "/ ") || name == "." || name == "..":
			return fmt.Errorf("%w: program name %q", ErrInvalidOptions, name)
		case o.Programs[name] != "":
			return fmt.Errorf("%w: %s is both a program and an external program", ErrInvalidOptions, name)
		case e.Module == "" || !strings.HasPrefix(e.Version, "v") || e.Package == "" || path.IsAbs(e.Package) || strings.Contains(e.Package, ".."):
			return fmt.Errorf("%w: external program %s: module %q version %q package %q", ErrInvalidOptions, name, e.Module, e.Version, e.Package)
		}
	}
	for p := range o.ExtraFiles {
		if !path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "/gokrazy/") || strings.HasPrefix(p, "/user/") {
			return fmt.Errorf("%w: extra file %q must be a clean absolute path outside /gokrazy and /user", ErrInvalidOptions, p)
		}
	}
	for p := range o.BootFiles {
		if !path.IsAbs(p) || path.Clean(p) != p || path.Dir(p) != "/" {
			return fmt.Errorf("%w: boot file %q must be in the boot partition's root directory", ErrInvalidOptions, p)
		}
	}
	return nil
}

// inputHash identifies the build's inputs; it seeds the disk GUIDs.
func (o *Options) inputHash() [32]byte {
	if o.DiskGUIDSeed != "" {
		return sha256.Sum256([]byte("pc2 disk guid seed\x00" + o.DiskGUIDSeed))
	}
	h := sha256.New()
	fmt.Fprintf(h, "pc2 image v1\x00%s\x00%d\x00", o.Board.Name, o.SourceDateEpoch)
	for _, k := range sortedKeys(o.Programs) {
		fmt.Fprintf(h, "prog\x00%s\x00%s\x00", k, o.Programs[k])
	}
	for _, k := range sortedKeys(o.ExtraFiles) {
		sum := sha256.Sum256(o.ExtraFiles[k])
		fmt.Fprintf(h, "file\x00%s\x00%s\x00", k, hex.EncodeToString(sum[:]))
	}
	for _, k := range sortedKeys(o.BootFiles) {
		sum := sha256.Sum256(o.BootFiles[k])
		fmt.Fprintf(h, "boot\x00%s\x00%s\x00", k, hex.EncodeToString(sum[:]))
	}
	for _, k := range sortedKeys(o.Vars) {
		fmt.Fprintf(h, "var\x00%s\x00%s\x00", k, o.Vars[k])
	}
	for _, k := range sortedKeys(o.PermFiles) {
		sum := sha256.Sum256(o.PermFiles[k].Data)
		fmt.Fprintf(h, "perm\x00%s\x00%o\x00%s\x00", k, o.PermFiles[k].Mode, hex.EncodeToString(sum[:]))
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Build builds the image described by opts.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	log := opts.Logger
	epoch := time.Unix(opts.SourceDateEpoch, 0).UTC()
	outDir := filepath.Dir(opts.Output)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{
		Image: opts.Output,
		Root:  filepath.Join(outDir, "root.squashfs"),
		Boot:  filepath.Join(outDir, "boot.img"),
	}
	guids := newGUIDs(opts.inputHash())
	res.DiskGUID = guids.disk
	res.PartGUIDs = guids.parts
	if opts.Board.MBR {
		res.DiskGUID = guids.mbrID()
		for i := range res.PartGUIDs {
			res.PartGUIDs[i] = fmt.Sprintf("%s-%02x", res.DiskGUID, i+1)
		}
	}
	res.Cmdline = kernelCmdline(opts.Board, res.PartGUIDs[0])

	work, err := os.MkdirTemp("", "pc2-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	start := time.Now()
	// Firmware first: a missing package fails the build before compiling.
	var firmware map[string][]byte
	if len(opts.Board.LinuxFirmware) > 0 {
		if firmware, err = linuxFirmware(ctx, opts.LinuxFirmwareDeb, opts.Board.LinuxFirmware); err != nil {
			return nil, err
		}
	}
	bins, err := compile(ctx, opts, filepath.Join(work, "bin"))
	if err != nil {
		return nil, err
	}
	log.Info("compiled", "programs", len(bins), "took", time.Since(start).Round(time.Millisecond))

	kernelDir, err := moduleDir(ctx, opts.ModuleDir, opts.Board.KernelModule)
	if err != nil {
		return nil, err
	}

	rootFiles, err := rootTree(opts, bins, kernelDir, firmware)
	if err != nil {
		return nil, err
	}
	res.RootBytes, err = writeSquashfs(ctx, res.Root, rootFiles, epoch, opts.RootSize)
	if err != nil {
		return nil, err
	}
	log.Info("root", "path", res.Root, "bytes", res.RootBytes)

	var firmwareDir string
	if opts.Board.FirmwareModule != "" {
		if firmwareDir, err = moduleDir(ctx, opts.ModuleDir, opts.Board.FirmwareModule); err != nil {
			return nil, err
		}
	}
	bootImg, err := bootPartition(opts, kernelDir, firmwareDir, res.Cmdline, epoch, guids)
	if err != nil {
		return nil, err
	}
	if err := writeSparseFile(res.Boot, bootImg); err != nil {
		return nil, err
	}

	if err := writeDisk(ctx, opts, guids, bootImg, res.Root, epoch); err != nil {
		return nil, err
	}
	log.Info("image", "path", res.Image, "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// kernelCmdline is the command line without padding. bootPartID is p1's
// GUID on GPT, "<disk signature>-01" on MBR.
func kernelCmdline(b boards.Board, bootPartID string) string {
	root := "root=PARTUUID=" + strings.ToLower(bootPartID) + "/PARTNROFF=1"
	if b.MBR {
		// The kernel names MBR partitions <signature>-<nn>; gokrazy's init
		// rewrites -02 to -03 on an A/B switch.
		sig, _, _ := strings.Cut(bootPartID, "-")
		root = "root=PARTUUID=" + strings.ToLower(sig) + "-02"
	}
	return strings.Join(append([]string{root}, b.Cmdline...), " ")
}
