// Package manifest is the format of the appliance's over-the-air
// updates, shared by the release builder on the build host and the
// updater on the device: a release bundle is a folder with the root and
// boot artifacts of one board and a manifest (version, board, channel, the
// minimum version a device may go back to, and each artifact's size and
// SHA-256), signed with an Ed25519 release key whose public half is built
// into the images (KeysPath), next to the image's own description
// (ReleasePath). A device checks the signature, the board and the version
// against its anti-downgrade floor before it writes anything (Verify), and
// each artifact's size and hash before it uses it (Check).
package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/identity"
)

// Bundle file names.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.json.sig"
)

// Format is the manifest's format name.
const Format = "pc2-release/1"

// Artifact names.
const (
	Root = "root" // the squashfs written to the inactive root partition
	Boot = "boot" // the FAT boot partition (kernel, boot loader)
)

// Channels.
const (
	Stable = "stable"
	Beta   = "beta"
)

// MaxSize bounds what is read of a manifest or signature.
const MaxSize = 64 << 10

// signTag separates release signatures from every other signature made
// with Ed25519 keys in PC2.
const signTag = "pc2/release/v1\x00"

// Manifest describes a release bundle.
type Manifest struct {
	Format  string `json:"format"`
	Version string `json:"version"` // MAJOR.MINOR.PATCH
	Board   string `json:"board"`
	Channel string `json:"channel"`
	// MinVersion is the anti-downgrade floor: a device that installed
	// this release refuses any release below it from then on.
	MinVersion string              `json:"min_version"`
	Created    time.Time           `json:"created"`
	Artifacts  map[string]Artifact `json:"artifacts"`
	// Signer is the release key's node ID, so a device with several
	// trusted keys knows which to check (the signature still decides).
	Signer string `json:"signer"`
}

// Artifact is one file of the bundle.
type Artifact struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
	// Files (boot only) are the SHA-256 of each file of the boot
	// partition that is the same on every device (BootPayload): a device
	// whose boot partition has the same fetches and writes no boot.
	Files map[string]string `json:"files,omitempty"`
}

// Errors a device reports when it refuses a bundle.
var (
	ErrUnsigned     = errors.New("manifest: the manifest is not signed")
	ErrBadSignature = errors.New("manifest: the manifest's signature is not from a trusted release key")
	ErrMalformed    = errors.New("manifest: malformed manifest")
	ErrBoard        = errors.New("manifest: the bundle is for another board")
	ErrDowngrade    = errors.New("manifest: downgrade below the minimum version")
	ErrArtifact     = errors.New("manifest: an artifact does not match the manifest")
)

// ParseVersion reads MAJOR.MINOR.PATCH (a leading "v" is allowed).
func ParseVersion(s string) ([3]int, error) {
	var v [3]int
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%w: version %q is not MAJOR.MINOR.PATCH", ErrMalformed, s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		// Atoi also takes a sign ("+1", "-0"): only digits are a version.
		if err != nil || strings.TrimLeft(p, "0123456789") != "" || n > 1<<30 || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("%w: version %q is not MAJOR.MINOR.PATCH", ErrMalformed, s)
		}
		v[i] = n
	}
	return v, nil
}

// CompareVersions returns -1, 0 or 1 as a is below, equal to or above b.
func CompareVersions(a, b string) (int, error) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := range va {
		switch {
		case va[i] < vb[i]:
			return -1, nil
		case va[i] > vb[i]:
			return 1, nil
		}
	}
	return 0, nil
}

// Validate checks the manifest's own fields (Verify does too).
func (m *Manifest) Validate() error { return m.check() }

// check validates the manifest's own fields.
func (m *Manifest) check() error {
	if m.Format != Format {
		return fmt.Errorf("%w: format %q, want %q", ErrMalformed, m.Format, Format)
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return err
	}
	if _, err := ParseVersion(m.MinVersion); err != nil {
		return err
	}
	if c, _ := CompareVersions(m.MinVersion, m.Version); c > 0 {
		return fmt.Errorf("%w: min_version %s above version %s", ErrMalformed, m.MinVersion, m.Version)
	}
	if m.Board == "" {
		return fmt.Errorf("%w: no board", ErrMalformed)
	}
	if m.Channel != Stable && m.Channel != Beta {
		return fmt.Errorf("%w: channel %q (want stable or beta)", ErrMalformed, m.Channel)
	}
	if _, ok := m.Artifacts[Root]; !ok {
		return fmt.Errorf("%w: no root artifact", ErrMalformed)
	}
	for name, a := range m.Artifacts {
		if name != Root && name != Boot {
			return fmt.Errorf("%w: unknown artifact %q", ErrMalformed, name)
		}
		if a.File == "" || a.File != filepath.Base(a.File) || strings.HasPrefix(a.File, ".") {
			return fmt.Errorf("%w: artifact %s: file %q must be a plain name in the bundle", ErrMalformed, name, a.File)
		}
		if a.Size <= 0 {
			return fmt.Errorf("%w: artifact %s: size %d", ErrMalformed, name, a.Size)
		}
		// Lowercase only: Checker compares the hex as written.
		if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != a.SHA256 {
			return fmt.Errorf("%w: artifact %s: sha256 %q", ErrMalformed, name, a.SHA256)
		}
		if name == Boot && len(a.Files) == 0 {
			return fmt.Errorf("%w: the boot artifact lists no files", ErrMalformed)
		}
		if name != Boot && a.Files != nil {
			return fmt.Errorf("%w: artifact %s: only the boot artifact lists files", ErrMalformed, name)
		}
		for p, h := range a.Files {
			if p == "" || p == "." || path.Clean(p) != p || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
				return fmt.Errorf("%w: boot file %q is not a clean relative path", ErrMalformed, p)
			}
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != h {
				return fmt.Errorf("%w: boot file %s: sha256 %q", ErrMalformed, p, h)
			}
		}
	}
	return nil
}

// Sign returns the manifest's bytes and their signature with key.
func Sign(m *Manifest, key ed25519.PrivateKey) (manifest, sig []byte, err error) {
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, err
	}
	m.Signer = id.String()
	if err := m.check(); err != nil {
		return nil, nil, err
	}
	manifest, err = json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	manifest = append(manifest, '\n')
	s := ed25519.Sign(key, append([]byte(signTag), manifest...))
	return manifest, []byte(base64.StdEncoding.EncodeToString(s) + "\n"), nil
}

// Policy is what a device accepts.
type Policy struct {
	Keys  []identity.ID // trusted release keys
	Board string
	// Floor is the anti-downgrade floor: the highest MinVersion of the
	// releases the device installed ("" or 0.0.0: none).
	Floor string
}

// Verify checks a manifest and its signature against p and returns it.
// Nothing about the artifacts is checked here (see Check).
func Verify(manifest, sig []byte, p Policy) (*Manifest, error) {
	if len(bytes.TrimSpace(sig)) == 0 {
		return nil, ErrUnsigned
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sig)))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: the signature file is not one base64 Ed25519 signature", ErrBadSignature)
	}
	msg := append([]byte(signTag), manifest...)
	var signer *identity.ID
	for i, k := range p.Keys {
		if ed25519.Verify(k.PublicKey(), msg, raw) {
			signer = &p.Keys[i]
			break
		}
	}
	if signer == nil {
		return nil, ErrBadSignature
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the manifest", ErrMalformed)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	// The key that verified, whatever the manifest says.
	m.Signer = signer.String()
	if m.Board != p.Board {
		return nil, fmt.Errorf("%w: it is for %s, this device is %s", ErrBoard, m.Board, p.Board)
	}
	if p.Floor != "" {
		c, err := CompareVersions(m.Version, p.Floor)
		if err != nil {
			return nil, fmt.Errorf("the device's version floor: %w", err)
		}
		if c < 0 {
			return nil, fmt.Errorf("%w: %s is below %s", ErrDowngrade, m.Version, p.Floor)
		}
	}
	return &m, nil
}

// ReadBundle reads and verifies the manifest of the bundle in dir.
func ReadBundle(dir string, p Policy) (*Manifest, error) {
	manifest, sig, err := ReadFiles(dir)
	if err != nil {
		return nil, err
	}
	return Verify(manifest, sig, p)
}

// ReadFiles returns the manifest and the signature of the bundle in dir,
// unverified; sig is nil when the bundle is not signed.
func ReadFiles(dir string) (manifest, sig []byte, err error) {
	manifest, err = readSmall(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, nil, err
	}
	sig, err = readSmall(filepath.Join(dir, SignatureFile))
	if errors.Is(err, os.ErrNotExist) {
		return manifest, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return manifest, sig, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformed, path, MaxSize)
	}
	return b, nil
}

// UnverifiedVersion returns the version a manifest claims, before (or
// without) its verification, for logs and the record of a refusal: "" when
// it has none that is short enough to show.
func UnverifiedVersion(manifest []byte) string {
	var m struct{ Version string }
	if json.Unmarshal(manifest, &m) != nil || len(m.Version) > 32 {
		return ""
	}
	return m.Version
}

// Checker reads an artifact through and checks its size and hash at the
// end: Read returns ErrArtifact instead of io.EOF when they do not
// match, and an error as soon as more bytes arrive than the manifest
// says, so a writer fed by it never takes a wrong artifact for a good
// one.
type Checker struct {
	r    io.Reader
	a    Artifact
	name string
	n    int64
	h    hash.Hash
}

// Check wraps r, which must yield artifact name of m.
func Check(r io.Reader, m *Manifest, name string) (*Checker, error) {
	a, ok := m.Artifacts[name]
	if !ok {
		return nil, fmt.Errorf("%w: the manifest has no %s artifact", ErrArtifact, name)
	}
	return &Checker{r: r, a: a, name: name, h: sha256.New()}, nil
}

func (c *Checker) Read(p []byte) (int, error) {
	// One byte more than allowed shows an oversize. (Size-n+1 would
	// overflow for a Size of MaxInt64.)
	if rest := c.a.Size - c.n; int64(len(p)) > rest {
		p = p[:rest+1]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	if c.n > c.a.Size {
		return n, fmt.Errorf("%w: %s is longer than its %d bytes", ErrArtifact, c.name, c.a.Size)
	}
	if err == io.EOF {
		if c.n != c.a.Size {
			return n, fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrArtifact, c.name, c.n, c.a.Size)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.a.SHA256 {
			return n, fmt.Errorf("%w: %s has SHA-256 %s, the manifest says %s", ErrArtifact, c.name, got, c.a.SHA256)
		}
	}
	return n, err
}

// Describe returns the Artifact entry of the file at path.
func Describe(path string) (Artifact, error) {
	f, err := os.Open(path)
	if err != nil {
		return Artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Artifact{}, err
	}
	return Artifact{File: filepath.Base(path), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ParseKeys reads a KeysPath file: one node ID (or DID) per line; blank
// lines and lines starting with # are skipped.
func ParseKeys(b []byte) ([]identity.ID, error) {
	var out []identity.ID
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, err := identity.ParseIDOrDID(line)
		if err != nil {
			return nil, fmt.Errorf("release keys, line %d: %w", i+1, err)
		}
		out = append(out, id)
	}
	return out, nil
}
