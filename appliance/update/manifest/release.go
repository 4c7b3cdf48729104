package manifest

import (
	"fmt"

	"github.com/pc2/pc2/appliance/config"
)

// What an image knows of itself, in its root file system. The release
// builder writes both files into every image and the device's updater
// reads them, so they are part of the format like the manifest: the
// release the device runs, and the keys the next release must be signed
// with.
const (
	// ReleasePath describes the running system (ReleaseInfo).
	ReleasePath = "/etc/pc2/release.json"
	// KeysPath is where an image keeps the release public keys it trusts
	// (one node ID, base58, per line: ParseKeys).
	KeysPath = "/etc/pc2/release-keys"
)

// ReleaseInfo is what an image knows of itself (ReleasePath).
type ReleaseInfo struct {
	Version    string `json:"version"`
	Board      string `json:"board"`
	Channel    string `json:"channel,omitempty"`
	MinVersion string `json:"min_version,omitempty"`
}

// ReadRelease reads ReleasePath (or another path).
func ReadRelease(path string) (ReleaseInfo, error) {
	var r ReleaseInfo
	if err := config.Load(path, &r); err != nil {
		return r, fmt.Errorf("manifest: %w", err)
	}
	if _, err := ParseVersion(r.Version); err != nil {
		return r, fmt.Errorf("manifest: %s: %w", path, err)
	}
	if r.Board == "" {
		return r, fmt.Errorf("manifest: %s names no board", path)
	}
	return r, nil
}
