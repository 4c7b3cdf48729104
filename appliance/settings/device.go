package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/rootdisk"
	"github.com/pc2/pc2/image/bootpart"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/atomicfile"
)

// Loaded are settings read on the device and where they came from.
type Loaded struct {
	*Settings
	// Source is the boot partition's disk and file, or the perm copy.
	Source string
	// Problem, if not nil, is why the boot partition's file was not used
	// (missing or malformed) when the perm copy was.
	Problem error

	boot     []byte // the boot partition's file, when it was used
	permFile string
}

// Paths are where Load looks; the zero value means the real device.
type Paths struct {
	// Disk is the boot disk; empty: the disk the root file system is on.
	Disk string
	// PermFile is the perm copy; empty: PermFile.
	PermFile string
}

// Load reads the device's settings from the boot partition; when it has no
// usable file it falls back on the perm copy and says why in
// Loaded.Problem. With neither, the error wraps config.ErrNotConfigured
// (no file) or says what is wrong. Load only reads: KeepCopy updates the
// copy (the device service does, once per boot).
func Load(p Paths) (*Loaded, error) {
	if p.PermFile == "" {
		p.PermFile = PermFile
	}
	disk := p.Disk
	var bootErr error
	if disk == "" {
		var d *rootdisk.Disk
		if d, bootErr = rootdisk.Find(); bootErr == nil {
			disk = d.Path
		}
	}
	var data []byte
	if bootErr == nil {
		data, bootErr = readBoot(disk)
	}
	if bootErr == nil {
		s, err := Parse(data)
		if err == nil {
			return &Loaded{Settings: s, Source: disk + ":" + BootFile, boot: data, permFile: p.PermFile}, nil
		}
		bootErr = fmt.Errorf("%s on %s: %w", BootFile, disk, err)
	}
	data, err := os.ReadFile(p.PermFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v, and no copy at %s", config.ErrNotConfigured, bootErr, p.PermFile)
		}
		return nil, fmt.Errorf("settings: %v; copy: %w", bootErr, err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("settings: %v; copy %s: %w", bootErr, p.PermFile, err)
	}
	return &Loaded{Settings: s, Source: p.PermFile, Problem: bootErr, permFile: p.PermFile}, nil
}

// KeepCopy writes settings read from the boot partition to the perm copy
// when the copy differs; settings read from the copy need nothing.
func (l *Loaded) KeepCopy() error {
	if l.boot == nil {
		return nil
	}
	data := append(bytes.TrimSpace(l.boot), '\n')
	if old, err := os.ReadFile(l.permFile); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(l.permFile), 0o700); err != nil {
		return fmt.Errorf("settings: keep a copy on perm: %w", err)
	}
	if err := atomicfile.Write(l.permFile, data, 0o600); err != nil {
		return fmt.Errorf("settings: keep a copy on perm: %w", err)
	}
	return nil
}

func readBoot(disk string) ([]byte, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	defer f.Close()
	b, err := bootpart.ReadFile(f, BootFile)
	if err != nil {
		return nil, fmt.Errorf("settings: %s: %w", disk, err)
	}
	return b, nil
}

// WriteImage replaces the settings in a disk image (or a flashed disk) in
// place, within the clusters the file has (bootpart.Rewrite).
func WriteImage(disk string, s *Settings) error { return writeBoot(disk, s, bootpart.Rewrite) }

// WriteDevice replaces the settings on a running device's boot disk so
// that a power cut leaves the old file or the new one, whole
// (bootpart.Replace): the device's own changes (the dashboard's settings
// page) take this path, where `pc2 image settings` rewrites a card in
// place.
func WriteDevice(disk string, s *Settings) error { return writeBoot(disk, s, bootpart.Replace) }

func writeBoot(disk string, s *Settings, write func(fat16.ReadWriterAt, string, []byte) error) error {
	data, err := Encode(s)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if err := write(f, BootFile, data); err != nil {
		f.Close()
		return fmt.Errorf("settings: %s: %w", disk, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("settings: sync %s: %w", disk, err)
	}
	return f.Close()
}

// ReadImage returns the settings in a disk image.
func ReadImage(disk string) (*Settings, error) {
	data, err := readBoot(disk)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}
