// Package update is the device's half of the over-the-air updates: it
// installs a verified release bundle (package manifest) on the inactive
// root partition and its boot slot (image/bootslot; the slot's files only
// when they changed), selects that slot for a test boot, and keeps the
// bookkeeping on perm that lets the test boot commit or return to the old
// version and kernel: the Updater for the device service, BeginTestBoot
// for the init's start of a test boot and its deadline, and NoteExit for
// the device service's exits. Its admin API endpoints and their client
// are package updateapi, the periodic check of an update server package
// pull.
package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/image/bootslot"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/provisioning/identity"
)

const (
	// DefaultDir is the updater's directory on perm.
	DefaultDir = "/perm/pc2/update"
	// DefaultHealthTimeout is how long a test boot has to pass its
	// health check.
	DefaultHealthTimeout = 5 * time.Minute
)

// Errors of Install besides the manifest's.
var (
	ErrBusy    = errors.New("update: another update is being installed")
	ErrTesting = errors.New("update: an update is waiting for its test boot")
	ErrNoKeys  = errors.New("update: this image trusts no release key (built without one), so it accepts no update")
	// ErrBootLayout: the new release's boot files do not fit this
	// device's boot partition layout (a reflash installs them).
	ErrBootLayout = errors.New("update: the boot partition's layout")
)

// Options configure an Updater.
type Options struct {
	// Dir holds the state, the log and the staged artifacts (default
	// DefaultDir).
	Dir string
	// Disk; nil: FindDisk().
	Disk *Disk
	// Release is the running system.
	Release manifest.ReleaseInfo
	// Keys are the trusted release keys (the image's manifest.KeysPath).
	Keys []identity.ID
	// HealthTimeout is the test boot's deadline given to updates
	// installed from now on (default DefaultHealthTimeout).
	HealthTimeout time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Updater installs updates on the device and follows their test boot.
type Updater struct {
	opts  Options
	disk  *Disk
	store *store
	log   *slog.Logger
	busy  sync.Mutex

	mu     sync.Mutex
	status Status
}

// Status is what the admin API and the dashboard show.
type Status struct {
	Version string `json:"version"`
	Board   string `json:"board"`
	Channel string `json:"channel,omitempty"`
	Floor   string `json:"floor,omitempty"`
	// Partition is the running root partition (2 or 3).
	Partition int `json:"partition"`
	// Installing is the version being written, Progress how far that
	// is; Testing the one on test.
	Installing string    `json:"installing,omitempty"`
	Progress   *Progress `json:"progress,omitempty"`
	Testing    *Pending  `json:"testing,omitempty"`
	Last       *Result   `json:"last,omitempty"`
	PullStatus
	Log string `json:"log,omitempty"`
}

// Progress is how far an install is: its step and, while an artifact is
// received, the bytes so far of its total.
type Progress struct {
	Step  string `json:"step"`
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"`
}

// setProgress records the install's step.
func (u *Updater) setProgress(step string, done, total int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status.Progress = &Progress{Step: step, Done: done, Total: total}
}

// progressReader reports the bytes read through it as step's progress.
type progressReader struct {
	r     io.Reader
	u     *Updater
	step  string
	done  int64
	total int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.u.setProgress(p.step, p.done, p.total)
	return n, err
}

// PullStatus is where and when the device looks for updates by itself
// (package pull keeps it up to date).
type PullStatus struct {
	URL       string    `json:"url,omitempty"`
	NextCheck time.Time `json:"next_check,omitzero"`
	LastCheck time.Time `json:"last_check,omitzero"`
	CheckErr  string    `json:"check_error,omitempty"`
	// Available is a newer release the last check found and verified,
	// not installed yet (the owner installs it, or the next check does).
	Available string `json:"available,omitempty"`
}

// New returns an Updater.
func New(opts Options) (*Updater, error) {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.HealthTimeout == 0 {
		opts.HealthTimeout = DefaultHealthTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := manifest.ParseVersion(opts.Release.Version); err != nil {
		return nil, fmt.Errorf("update: the running release: %w", err)
	}
	u := &Updater{opts: opts, disk: opts.Disk, store: &store{dir: opts.Dir}, log: opts.Logger}
	if u.disk == nil {
		d, err := FindDisk()
		if err != nil {
			return nil, err
		}
		u.disk = d
	}
	st, err := u.store.load()
	if err != nil {
		return nil, err
	}
	u.setStatus(st)
	return u, nil
}

func (u *Updater) now() time.Time { return u.opts.Now() }

// logf writes to the update log and the service log.
func (u *Updater) logf(level slog.Level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	u.store.logf(u.now(), "%s", msg)
	u.log.Log(context.Background(), level, "update: "+msg)
}

func (u *Updater) setStatus(st *State) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status.Version = u.opts.Release.Version
	u.status.Board = u.opts.Release.Board
	u.status.Channel = u.opts.Release.Channel
	u.status.Floor = u.floor(st)
	u.status.Partition = u.disk.Running
	u.status.Testing = st.Pending
	u.status.Last = st.Last
}

// Status returns the updater's state; withLog adds the last update's log.
func (u *Updater) Status(withLog bool) Status {
	u.mu.Lock()
	s := u.status
	u.mu.Unlock()
	if withLog {
		s.Log = u.store.readLog()
	}
	return s
}

// SetPullStatus records what the pull loop is doing, for Status.
func (u *Updater) SetPullStatus(p PullStatus) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status.PullStatus = p
}

// Release is the running release.
func (u *Updater) Release() manifest.ReleaseInfo { return u.opts.Release }

// floor is the anti-downgrade floor: the state's and the running
// release's min_version, whichever is higher.
func (u *Updater) floor(st *State) string {
	f := st.Floor
	if m := u.opts.Release.MinVersion; m != "" {
		if f == "" {
			f = m
		} else if c, err := manifest.CompareVersions(m, f); err == nil && c > 0 {
			f = m
		}
	}
	return f
}

// Plan is what Check found: the verified manifest and the artifacts the
// device needs.
type Plan struct {
	Manifest *manifest.Manifest `json:"manifest"`
	Needs    []string           `json:"needs"`
}

// Check verifies a manifest against the device (signature, board,
// version floor) and says which artifacts it needs: the root always, the
// boot partition only when its payload (kernel, boot loader, firmware)
// differs from the one the device has.
func (u *Updater) Check(raw, sig []byte) (*Plan, error) {
	st, err := u.store.load()
	if err != nil {
		return nil, err
	}
	return u.plan(raw, sig, st)
}

func (u *Updater) plan(raw, sig []byte, st *State) (*Plan, error) {
	if len(u.opts.Keys) == 0 {
		return nil, ErrNoKeys
	}
	m, err := manifest.Verify(raw, sig, manifest.Policy{Keys: u.opts.Keys, Board: u.opts.Release.Board, Floor: u.floor(st)})
	if err != nil {
		return nil, err
	}
	p := &Plan{Manifest: m, Needs: []string{manifest.Root}}
	b, ok := m.Artifacts[manifest.Boot]
	if !ok {
		// Its kernel must be in the new root's boot slot (checkSlot).
		return nil, fmt.Errorf("%w: the release has no boot artifact, which the new root's boot slot needs", manifest.ErrArtifact)
	}
	changed, err := u.bootChanged(b.Files)
	if err != nil {
		return nil, err
	}
	if changed {
		p.Needs = append(p.Needs, manifest.Boot)
	}
	return p, nil
}

// bootChanged compares the payload files of the device's inactive boot
// slot (the one an update writes) and its shared boot files with want.
func (u *Updater) bootChanged(want map[string]string) (bool, error) {
	f, err := os.Open(u.disk.Boot)
	if err != nil {
		return false, fmt.Errorf("update: %w", err)
	}
	defer f.Close()
	slot, err := bootslot.Of(u.disk.Inactive())
	if err != nil {
		return false, err
	}
	have, err := manifest.BootPayload(f, slot)
	if err != nil {
		return false, fmt.Errorf("update: the boot partition: %w", err)
	}
	if len(have) != len(want) {
		return true, nil
	}
	for p, h := range want {
		if have[p] != h {
			return true, nil
		}
	}
	return false, nil
}

// Fetch returns the contents of one artifact of the manifest being
// installed; Install calls it for the root first, then the boot.
type Fetch func(ctx context.Context, name string) (io.ReadCloser, error)

// Install verifies the manifest, stages the artifacts the device needs on
// perm (checking each one's size and SHA-256), writes the root to the
// inactive partition and the boot partition when its payload changed,
// and asks gokrazy's init for a test boot of the new root. The caller
// reboots. Nothing is written to a partition before every artifact
// passed its check; a refused or failed install is the last result.
func (u *Updater) Install(ctx context.Context, source string, raw, sig []byte, fetch Fetch) (*manifest.Manifest, error) {
	if !u.busy.TryLock() {
		return nil, ErrBusy
	}
	defer u.busy.Unlock()
	st, err := u.store.load()
	if err != nil {
		return nil, err
	}
	if st.Pending != nil {
		return nil, fmt.Errorf("%w (%s)", ErrTesting, st.Pending.Version)
	}
	u.store.newLog()
	plan, err := u.plan(raw, sig, st)
	if err != nil {
		u.finish(st, &Result{Version: manifest.UnverifiedVersion(raw), From: u.opts.Release.Version, Outcome: Refused, Reason: err.Error(), Source: source})
		return nil, err
	}
	m := plan.Manifest
	u.mu.Lock()
	u.status.Installing = m.Version
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.status.Installing, u.status.Progress = "", nil
		u.mu.Unlock()
	}()
	// Recorded before anything is fetched or written: a power cut in the
	// middle is told at the next start (Resume).
	st.Installing = &Result{Version: m.Version, From: u.opts.Release.Version, Source: source, Time: u.now()}
	if err := u.store.save(st); err != nil {
		return nil, err
	}
	u.logf(slog.LevelInfo, "installing %s (%s, %s) over %s from %s; needs %s", m.Version, m.Board, m.Channel,
		u.opts.Release.Version, source, strings.Join(plan.Needs, " and "))
	pending, err := u.write(ctx, plan, source, fetch)
	if err == nil {
		err = u.checkSlot(m, pending.Partition)
	}
	if err != nil {
		outcome := Failed
		if errors.Is(err, manifest.ErrArtifact) {
			outcome = Refused
		}
		u.finish(st, &Result{Version: m.Version, From: u.opts.Release.Version, Outcome: outcome, Reason: err.Error(), Source: source})
		return nil, err
	}
	st.Pending = pending
	st.Installing = nil
	if err := u.store.save(st); err != nil {
		return nil, err
	}
	// The switch: the selectors name the new slot, one sector each.
	if err := u.withBoot(true, func(v bootVolume) error { return selectRoot(v, pending.Partition) }); err != nil {
		st.Pending = nil
		u.finish(st, &Result{Version: m.Version, From: u.opts.Release.Version, Outcome: Failed, Reason: err.Error(), Source: source})
		return nil, err
	}
	u.setStatus(st)
	u.logf(slog.LevelInfo, "%s written to partition %d; the next boot tests it (health check within %s)",
		m.Version, pending.Partition, time.Duration(pending.HealthTimeout))
	return m, nil
}

// Refuse records a refused update (raw: the manifest as received) as
// the last result, unless an install is running.
func (u *Updater) Refuse(raw []byte, source string, err error) {
	if !u.busy.TryLock() {
		return
	}
	defer u.busy.Unlock()
	st, lerr := u.store.load()
	if lerr != nil || st.Pending != nil {
		return
	}
	u.store.newLog()
	u.finish(st, &Result{Version: manifest.UnverifiedVersion(raw), From: u.opts.Release.Version, Outcome: Refused, Reason: err.Error(), Source: source})
}

// finish records r as the last result and clears the pending update.
func (u *Updater) finish(st *State, r *Result) {
	r.Time = u.now()
	st.Last = r
	st.Pending = nil
	st.Installing = nil
	level := slog.LevelInfo
	if r.Outcome != Installed {
		level = slog.LevelWarn
	}
	msg := r.Outcome + " " + r.Version
	if r.Reason != "" {
		msg += ": " + r.Reason
	}
	u.logf(level, "%s", msg)
	if err := u.store.save(st); err != nil {
		u.log.Error("update: state not saved", "err", err)
	}
	u.setStatus(st)
}

// write stages and writes the artifacts.
func (u *Updater) write(ctx context.Context, plan *Plan, source string, fetch Fetch) (*Pending, error) {
	m := plan.Manifest
	staging := filepath.Join(u.opts.Dir, stagingDir)
	if err := os.RemoveAll(staging); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	defer os.RemoveAll(staging)
	var need int64
	for _, n := range plan.Needs {
		need += m.Artifacts[n].Size
	}
	if free, err := freeBytes(staging); err != nil {
		return nil, err
	} else if free < need+(4<<20) {
		return nil, fmt.Errorf("%w: it needs %d MB, perm has %d MB free", ErrNoSpace, (need+(4<<20))>>20, free>>20)
	}
	staged := map[string]string{}
	for _, n := range plan.Needs {
		p := filepath.Join(staging, n)
		start := u.now()
		if err := u.stage(ctx, fetch, m, n, p); err != nil {
			return nil, err
		}
		staged[n] = p
		u.logf(slog.LevelInfo, "%s: %d bytes received and checked (SHA-256 %s) in %s", n, m.Artifacts[n].Size,
			m.Artifacts[n].SHA256[:16], u.now().Sub(start).Round(time.Millisecond))
	}
	target := u.disk.Inactive()
	var boot []bootWrite
	if p, ok := staged[manifest.Boot]; ok {
		// Planned before the root is written: nothing is written unless
		// every boot file has its place on this device.
		var err error
		if boot, err = u.planBoot(p, target); err != nil {
			return nil, err
		}
	}
	start := u.now()
	u.setProgress(fmt.Sprintf("writing the root to partition %d", target), 0, 0)
	if err := writePartition(u.disk.Root(target), staged[manifest.Root], m.Artifacts[manifest.Root].SHA256); err != nil {
		return nil, err
	}
	u.logf(slog.LevelInfo, "root written to partition %d and read back in %s", target, u.now().Sub(start).Round(time.Millisecond))
	if len(boot) > 0 {
		if err := u.writeBoot(boot, target); err != nil {
			return nil, err
		}
	}
	return &Pending{Version: m.Version, From: u.opts.Release.Version, MinVersion: m.MinVersion, Partition: target,
		BootWritten: staged[manifest.Boot] != "", Source: source, Installed: u.now(),
		HealthTimeout: config.Duration(u.opts.HealthTimeout)}, nil
}

// stage fetches artifact name into path, checking it against m.
func (u *Updater) stage(ctx context.Context, fetch Fetch, m *manifest.Manifest, name, path string) error {
	step := "receiving the " + name
	u.setProgress(step, 0, m.Artifacts[name].Size)
	rc, err := fetch(ctx, name)
	if err != nil {
		return fmt.Errorf("update: fetch %s: %w", name, err)
	}
	defer rc.Close()
	c, err := manifest.Check(&progressReader{r: rc, u: u, step: step, total: m.Artifacts[name].Size}, m, name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyBuffer(f, c, make([]byte, 1<<20)); err != nil {
		if errors.Is(err, manifest.ErrArtifact) {
			return err
		}
		return fmt.Errorf("update: receive %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return f.Close()
}

// bootWrite is one file an update writes to the boot partition.
type bootWrite struct {
	path string // on the device's boot partition
	data []byte
}

// checkSlot verifies, before anything selects it, that the boot slot of
// root partition p holds the release's slot files (the boot artifact's
// payload hashes): a slot without its kernel (the image builder leaves
// slot b's empty, a power cut may leave one half written) is never
// selected.
func (u *Updater) checkSlot(m *manifest.Manifest, p int) error {
	slot, err := bootslot.Of(p)
	if err != nil {
		return err
	}
	var have map[string]string
	if err := u.withBoot(false, func(v bootVolume) (err error) { have, err = manifest.BootPayload(v, slot); return err }); err != nil {
		return fmt.Errorf("update: the boot partition: %w", err)
	}
	want := m.Artifacts[manifest.Boot].Files
	n := 0
	for k, h := range want {
		if !strings.HasPrefix(k, manifest.SlotPrefix) {
			continue
		}
		n++
		if have[k] != h {
			return fmt.Errorf("update: boot slot %s does not hold the release's %s after the install; it is not selected", slot, strings.TrimPrefix(k, manifest.SlotPrefix))
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: the release describes no boot slot files", manifest.ErrArtifact)
	}
	return nil
}

// fixedFiles are boot files an update cannot replace: SYSLINUX's
// ldlinux.c32 must be the version of the device's own ldlinux.sys, which
// the boot sector finds by its sectors (manifest.SyslinuxLoader), so a
// new SYSLINUX needs a reflash.
var fixedFiles = map[string]bool{"ldlinux.c32": true}

// planBoot reads a staged boot artifact and returns the files of the
// device's boot partition to write for target's slot: the artifact's
// slot files (cmdline.txt with this disk's root= for target) into
// target's slot, and the shared files (firmware, boot loaders, config.txt
// keeping the device's selection) whose contents changed. The settings
// file and the loaders' selectors are the device's own. A file the
// device's boot partition has no place for is refused: the layout
// changed, and only a reflash brings the new one.
func (u *Updater) planBoot(path string, target int) ([]bootWrite, error) {
	rel, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	defer rel.Close()
	// The artifact leaves out the volume's trailing zeros; put them back
	// (sparse) so that it reads as the whole partition.
	size, err := fat16.Size(rel)
	if err != nil {
		return nil, fmt.Errorf("%w: the boot artifact: %v", manifest.ErrArtifact, err)
	}
	if n, err := sizeOf(rel); err != nil || n > size {
		return nil, fmt.Errorf("%w: the boot artifact is larger than its FAT volume", manifest.ErrArtifact)
	} else if err := rel.Truncate(size); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	relSlot, err := bootslot.Selected(rel)
	if err != nil {
		return nil, fmt.Errorf("%w: the boot artifact: %v", manifest.ErrArtifact, err)
	}
	dev, err := os.Open(u.disk.Boot)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	defer dev.Close()
	cur, err := readBootConfig(dev)
	if err != nil {
		return nil, fmt.Errorf("the boot partition: %w", err)
	}
	slot, err := bootslot.Of(target)
	if err != nil {
		return nil, err
	}
	// This disk's root= for target, from the running slot's command line.
	runSlot, err := bootslot.Of(u.disk.Running)
	if err != nil {
		return nil, err
	}
	runCmdline, err := bootslot.ReadCmdline(dev, runSlot)
	if err != nil {
		return nil, fmt.Errorf("the boot partition: %w", err)
	}
	runRoot, err := rootField([]byte(runCmdline + "\n"))
	if err != nil {
		return nil, fmt.Errorf("the boot partition: slot %s: %w", runSlot, err)
	}
	root, err := bootslot.WithPartition(runRoot, target)
	if err != nil {
		return nil, err
	}
	var out []bootWrite
	err = fat16.Walk(rel, func(p string, _ int64) error {
		lower := strings.ToLower(p)
		s, name, inSlot := bootslot.Split(p)
		dst := p
		switch {
		case inSlot && s != relSlot:
			return nil
		case inSlot:
			dst = slot + "/" + name
		case lower == strings.ToLower(manifest.SettingsFile) || lower == manifest.SyslinuxLoader || lower == bootslot.Entry || lower == bootslot.Syslinux:
			return nil
		}
		data, err := fat16.ReadFile(rel, p)
		if err != nil {
			return fmt.Errorf("%w: the boot artifact: %v", manifest.ErrArtifact, err)
		}
		switch {
		case inSlot && strings.EqualFold(name, bootslot.Cmdline):
			relRoot, err := rootField(data)
			if err != nil {
				return fmt.Errorf("%w: the boot artifact: %s: %v", manifest.ErrArtifact, p, err)
			}
			if strings.Contains(relRoot, "/PARTNROFF=") != strings.Contains(root, "/PARTNROFF=") {
				return fmt.Errorf("%w: the boot artifact's root= %s is not of this disk's kind (%s)", manifest.ErrArtifact, relRoot, root)
			}
			if data, err = editCmdline(data, setRoot(root)); err != nil {
				return fmt.Errorf("%w: the boot artifact: %s: %v", manifest.ErrArtifact, p, err)
			}
		case lower == bootslot.ConfigTxt:
			if data, err = bootslot.Selection(bootslot.ConfigTxt, data, cur.slot, ""); err != nil {
				return fmt.Errorf("%w: the boot artifact: %v", manifest.ErrArtifact, err)
			}
		}
		have, err := fat16.ReadFile(dev, dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%w: the new release has boot file %s, which this device's boot partition has no place for; install it by reflashing", ErrBootLayout, dst)
		case err != nil:
			return fmt.Errorf("update: the boot partition: %w", err)
		case bytes.Equal(have, data):
			return nil
		case fixedFiles[lower]:
			return fmt.Errorf("%w: the new release changes %s, which must match the device's own SYSLINUX; install it by reflashing", ErrBootLayout, p)
		}
		out = append(out, bootWrite{path: dst, data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The slot first: a shared file (firmware) changes the running
	// version's start too, so it comes last.
	slices.SortStableFunc(out, func(a, b bootWrite) int {
		_, _, sa := bootslot.Split(a.path)
		_, _, sb := bootslot.Split(b.path)
		switch {
		case sa == sb:
			return 0
		case sa:
			return -1
		}
		return 1
	})
	return out, nil
}

// writeBoot writes the planned boot files: each into clusters no file
// uses, then switched in by its directory entry (fat16.Replace), so a
// power cut leaves each file whole, old or new. The slot's files are not
// selected by anything until the update selects them; the shared ones
// are not A/B (the Pi firmware and the boot loaders have one place).
func (u *Updater) writeBoot(files []bootWrite, target int) error {
	start := u.now()
	slot, _ := bootslot.Of(target)
	u.setProgress("writing boot slot "+slot, 0, 0)
	var slotFiles, shared []string
	var n int64
	err := u.withBoot(true, func(v bootVolume) error {
		for _, f := range files {
			if err := fat16.Replace(v, f.path, f.data); err != nil {
				if errors.Is(err, fat16.ErrTooLarge) {
					return fmt.Errorf("%w: %v", ErrNoSpace, err)
				}
				return fmt.Errorf("update: the boot partition: %w", err)
			}
			n += int64(len(f.data))
			if _, name, ok := bootslot.Split(f.path); ok {
				slotFiles = append(slotFiles, name)
			} else {
				shared = append(shared, f.path)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("boot slot %s written (%s; %d bytes in all) in %s", slot, strings.Join(slotFiles, ", "), n, u.now().Sub(start).Round(time.Millisecond))
	if len(shared) > 0 {
		msg += "; shared boot files replaced: " + strings.Join(shared, ", ")
	}
	u.logf(slog.LevelInfo, "%s", msg)
	return nil
}

// withBoot opens the boot partition and runs f on it, then syncs.
func (u *Updater) withBoot(write bool, f func(bootVolume) error) error {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	vol, err := os.OpenFile(u.disk.Boot, flag, 0)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer vol.Close()
	if err := f(vol); err != nil {
		return err
	}
	if write {
		if err := vol.Sync(); err != nil {
			return fmt.Errorf("update: sync %s: %w", u.disk.Boot, err)
		}
	}
	return vol.Close()
}

// BootState is how Resume found the device at boot.
type BootState int

const (
	// Normal: no update in progress.
	Normal BootState = iota
	// TestBoot: this is the test boot of a new version; the caller
	// checks its health and calls Commit or Fail.
	TestBoot
	// Returned: a test boot failed or never reported and the device runs
	// the old version again (recorded as rolled back).
	Returned
	// Committed: the update was committed (recorded as installed).
	Committed
)

// Resume is called once at every start of the device service: it finds
// out whether this boot is the test boot of an update, records the
// outcome of a test boot that ended, and makes a selection that no
// update explains name the running version again.
func (u *Updater) Resume() (BootState, *Pending, error) {
	st, err := u.store.load()
	if err != nil {
		return Normal, nil, err
	}
	var cfg bootConfig
	err = u.withBoot(false, func(v bootVolume) (err error) { cfg, err = readBootConfig(v); return err })
	if errors.Is(err, bootslot.ErrDisagree) {
		// A power cut between two selectors' writes: this start came
		// through one of them; both name the running slot again (an
		// update not committed yet is then recorded as rolled back).
		u.log.Warn("update: the boot selectors disagree (a power cut during a switch); they name the running partition again", "err", err)
		err = u.withBoot(true, func(v bootVolume) error {
			if err := selectRoot(v, u.disk.Running); err != nil {
				return err
			}
			cfg, err = readBootConfig(v)
			return err
		})
	}
	if err != nil {
		return Normal, nil, err
	}
	if in := st.Installing; in != nil {
		u.finish(st, &Result{Version: in.Version, From: in.From, Outcome: Failed, Source: in.Source,
			Reason: "the install was interrupted: the device stopped before it ended (a power cut or a crash); the running version was not touched"})
	}
	p := st.Pending
	switch {
	case p == nil:
		if cfg.partition != u.disk.Running {
			// No update explains it (its record was lost): the next
			// start would run whatever the other slot holds.
			u.log.Warn("update: the boot configuration names the other partition with no update pending; it names the running one again",
				"named", cfg.partition, "running", u.disk.Running)
			return Normal, nil, u.withBoot(true, func(v bootVolume) error { return selectRoot(v, u.disk.Running) })
		}
		return Normal, nil, nil
	case p.Partition == u.disk.Running:
		// The init (BeginTestBoot) selected the old version again for
		// any start after this one; the commit selects this one. (With
		// p.Failure set, the test failed and its reboot did not happen:
		// the caller reboots.)
		u.logf(slog.LevelInfo, "test boot of %s on partition %d (the boot configuration names %d until the commit)", p.Version, p.Partition, cfg.partition)
		return TestBoot, p, nil
	case cfg.partition == p.Partition:
		// Written and selected, but the reboot into the test boot has
		// not happened yet (the device service restarted first).
		u.log.Info("update: written and waiting for the reboot into its test boot", "version", p.Version)
		return Normal, p, nil
	default:
		reason := p.Failure
		if reason == "" {
			reason = "the new system did not come up: it never reported a health check (a crash, a power cut, or a hang before its deadline)"
			if line, n := u.store.lastExit(); n > 0 {
				reason += fmt.Sprintf("; the device service exited %d times, last: %s", n, line)
			}
		}
		u.finish(st, &Result{Version: p.Version, From: p.From, Outcome: RolledBack, Reason: reason, Source: p.Source})
		return Returned, p, nil
	}
}

// Commit makes the running test boot permanent: the boot configuration
// selects this partition's slot from now on.
func (u *Updater) Commit() error {
	st, err := u.store.load()
	if err != nil {
		return err
	}
	if st.Pending == nil || st.Pending.Partition != u.disk.Running {
		return errors.New("update: no test boot to commit")
	}
	if err := u.withBoot(true, func(v bootVolume) error { return selectRoot(v, u.disk.Running) }); err != nil {
		return err
	}
	u.commitState(st)
	return nil
}

func (u *Updater) commitState(st *State) {
	p := st.Pending
	// No floor yet (a release.json without min_version): CompareVersions
	// would refuse "" and the manifest's floor would be lost.
	if f := u.floor(st); f == "" {
		st.Floor = p.MinVersion
	} else if c, err := manifest.CompareVersions(p.MinVersion, f); err == nil && (c > 0 || st.Floor == "") {
		st.Floor = p.MinVersion
	}
	u.finish(st, &Result{Version: p.Version, From: p.From, Outcome: Installed, Source: p.Source})
}

// Fail records why the test boot failed; the caller then reboots into
// the old version, which records the rollback.
func (u *Updater) Fail(reason string) error {
	st, err := u.store.load()
	if err != nil {
		return err
	}
	if st.Pending == nil || st.Pending.Partition != u.disk.Running {
		return errors.New("update: no test boot")
	}
	u.logf(slog.LevelWarn, "test boot of %s failed: %s; returning to partition %d", st.Pending.Version, reason, u.disk.Inactive())
	st.Pending.Failure = reason
	if err := u.store.save(st); err != nil {
		return err
	}
	// The init selected the old version at the start of this boot; make
	// sure of it before the reboot.
	return u.withBoot(true, func(v bootVolume) error { return selectRoot(v, u.disk.Inactive()) })
}

// NoteExit records, during a test boot, that the device service is
// exiting with err (the rollback's reason names the last one). It is
// for the device command's error path and does nothing outside a test
// boot (dir "": DefaultDir; disk nil: FindDisk()).
func NoteExit(dir string, disk *Disk, err error) {
	if dir == "" {
		dir = DefaultDir
	}
	s := &store{dir: dir}
	st, lerr := s.load()
	if lerr != nil || st.Pending == nil {
		return
	}
	if disk == nil {
		if disk, lerr = FindDisk(); lerr != nil {
			return
		}
	}
	if st.Pending.Partition != disk.Running {
		return
	}
	f, ferr := os.OpenFile(filepath.Join(dir, exitsFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	line := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(line) > 300 {
		line = line[:300] + "..."
	}
	f.WriteString(time.Now().UTC().Format(time.RFC3339) + " " + line + "\n")
	f.Sync()
}
