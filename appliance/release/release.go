// Package release builds release bundles: the signed over-the-air
// updates whose format is package manifest (the device installs them
// with package update). A bundle is a folder with the root file system
// (root.squashfs), the boot partition (boot.img, without its trailing
// zero blocks), manifest.json and manifest.json.sig; an update server
// serves bundles at <base>/<channel>/<board>/.
//
// The image inside a bundle knows its own version, board and channel
// (manifest.ReleasePath) and trusts the release keys it was built with
// (manifest.KeysPath), so each release can verify the next. Build can also
// write the matching flashable disk image: what a new device starts
// from.
package release

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/boards"
	"github.com/pc2/pc2/image"
	"github.com/pc2/pc2/provisioning/identity"
)

// VersionVar is the pc2 program's version variable, set at link time.
const VersionVar = "github.com/pc2/pc2/cmd/pc2/cli.Version"

// Bundle file names of the artifacts.
const (
	RootFile = "root.squashfs"
	BootFile = "boot.img"
)

// Options configure Build.
type Options struct {
	Board   boards.Board
	Version string // MAJOR.MINOR.PATCH
	// MinVersion is the manifest's anti-downgrade floor (default: Version:
	// a device that installed this release accepts nothing older).
	MinVersion string
	Channel    string // manifest.Stable (default) or manifest.Beta
	// Key signs the manifest.
	Key ed25519.PrivateKey
	// Trust are the release keys the built image trusts (default: Key's).
	Trust []identity.ID
	// Out is the bundle folder (created; existing bundle files are
	// replaced).
	Out string
	// Image, if set, is where the flashable disk image is written, with
	// Settings on its boot partition and PermFiles on perm.
	Image     string
	Settings  *settings.Settings
	PermFiles map[string]image.PermFile
	// Files are root files added or replaced (e.g. a gokrazy password).
	Files map[string][]byte
	// Image builder options (package image).
	ModuleDir                    string
	SourceDateEpoch              int64
	BootSize, RootSize, PermSize int64
	Logger                       *slog.Logger
}

// Result is a built bundle.
type Result struct {
	Manifest *manifest.Manifest
	Dir      string
	Image    string // "" unless Options.Image
}

// Files returns the root files that describe a release: manifest.ReleasePath
// and manifest.KeysPath. `pc2 image build` adds them too, so every image
// knows its version and the keys it trusts.
func Files(info manifest.ReleaseInfo, trust []identity.ID) (map[string][]byte, error) {
	if _, err := manifest.ParseVersion(info.Version); err != nil {
		return nil, err
	}
	b, err := jsonIndent(info)
	if err != nil {
		return nil, err
	}
	var keys strings.Builder
	keys.WriteString("# Release keys this image accepts updates from (pc2 release --key).\n")
	for _, id := range trust {
		keys.WriteString(id.String() + "\n")
	}
	return map[string][]byte{manifest.ReleasePath: b, manifest.KeysPath: []byte(keys.String())}, nil
}

// Build builds the bundle (and the disk image when asked).
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Key == nil {
		return nil, errors.New("release: no signing key")
	}
	if o.Out == "" {
		return nil, errors.New("release: no output folder")
	}
	if o.Channel == "" {
		o.Channel = manifest.Stable
	}
	if o.MinVersion == "" {
		o.MinVersion = o.Version
	}
	if len(o.Trust) == 0 {
		id, err := identity.IDFromPublicKey(o.Key.Public().(ed25519.PublicKey))
		if err != nil {
			return nil, err
		}
		o.Trust = []identity.ID{id}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	info := manifest.ReleaseInfo{Version: o.Version, Board: o.Board.Name, Channel: o.Channel, MinVersion: o.MinVersion}
	rel, err := Files(info, o.Trust)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	// Checked before the long build: the manifest would be refused.
	if err := (&manifest.Manifest{Format: manifest.Format, Version: o.Version, MinVersion: o.MinVersion, Board: o.Board.Name,
		Channel: o.Channel, Artifacts: map[string]manifest.Artifact{manifest.Root: {File: RootFile, Size: 1, SHA256: strings.Repeat("0", 64)}}}).Validate(); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	var img *profile.Image
	if o.Settings != nil {
		img, err = profile.Build(o.Settings)
	} else {
		// The boot partition's settings file is a placeholder: a device
		// keeps its own when it installs the bundle.
		img, err = profile.Root()
		if err == nil {
			var b []byte
			b, err = settings.Encode(&settings.Settings{Profile: settings.Personal})
			img.BootFiles = map[string][]byte{"/" + settings.BootFile: b}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	for p, b := range rel {
		img.Files[p] = b
	}
	for p, b := range o.Files {
		img.Files[p] = b
	}
	out := o.Image
	if out == "" {
		tmp, err := os.MkdirTemp("", "pc2-release-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		out = filepath.Join(tmp, "disk.img")
	}
	res, err := image.Build(ctx, image.Options{
		Board: o.Board, Programs: img.Programs, External: img.External, ExtraFiles: img.Files, BootFiles: img.BootFiles, PermFiles: o.PermFiles,
		SourceDateEpoch: o.SourceDateEpoch, Output: out, ModuleDir: o.ModuleDir,
		BootSize: o.BootSize, RootSize: o.RootSize, PermSize: o.PermSize,
		Vars:   map[string]string{VersionVar: o.Version},
		Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	for _, f := range []string{manifest.ManifestFile, manifest.SignatureFile} {
		os.Remove(filepath.Join(o.Out, f))
	}
	rootA, err := copyFile(res.Root, filepath.Join(o.Out, RootFile))
	if err != nil {
		return nil, err
	}
	boot, err := os.ReadFile(res.Boot)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	payload, err := manifest.BootPayload(bytes.NewReader(boot), "")
	if err != nil {
		return nil, fmt.Errorf("release: the boot partition: %w", err)
	}
	bootA, err := writeTrimmed(filepath.Join(o.Out, BootFile), boot)
	if err != nil {
		return nil, err
	}
	bootA.Files = payload
	m := &manifest.Manifest{Format: manifest.Format, Version: o.Version, Board: o.Board.Name, Channel: o.Channel,
		MinVersion: o.MinVersion, Created: time.Unix(o.SourceDateEpoch, 0).UTC(),
		Artifacts: map[string]manifest.Artifact{manifest.Root: rootA, manifest.Boot: bootA}}
	raw, sig, err := manifest.Sign(m, o.Key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, manifest.ManifestFile), raw, 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.Out, manifest.SignatureFile), sig, 0o644); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	r := &Result{Manifest: m, Dir: o.Out}
	if o.Image != "" {
		r.Image = res.Image
	}
	return r, nil
}

// copyFile copies src to dst and describes it.
func copyFile(src, dst string) (manifest.Artifact, error) {
	if a, err := filepath.Abs(src); err == nil {
		if b, err := filepath.Abs(dst); err == nil && a == b {
			// The disk image went to the bundle folder: so did the root.
			return manifest.Describe(dst)
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return manifest.Artifact{}, fmt.Errorf("release: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return manifest.Artifact{}, fmt.Errorf("release: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return manifest.Artifact{}, fmt.Errorf("release: %w", err)
	}
	if err := out.Close(); err != nil {
		return manifest.Artifact{}, fmt.Errorf("release: %w", err)
	}
	return manifest.Describe(dst)
}

// writeTrimmed writes the boot partition without its trailing all-zero
// 4 KiB blocks (most of it: the device writes zeros up to the FAT
// volume's size) and describes the file.
func writeTrimmed(path string, b []byte) (manifest.Artifact, error) {
	const block = 4096
	n := len(b)
	for n > 0 {
		s := (n - 1) / block * block
		if !allZero(b[s:n]) {
			break
		}
		n = s
	}
	if err := os.WriteFile(path, b[:n], 0o644); err != nil {
		return manifest.Artifact{}, fmt.Errorf("release: %w", err)
	}
	return manifest.Describe(path)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
