package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/provisioning/identity"
)

// devBoard is the fake device's board.
const devBoard = "testpc"

// rootPartSize is the size of the fake root partitions.
const rootPartSize = 3 << 20

// devNow is the fake device's clock.
func devNow() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }

// releaseKey returns the release key made from a fixed seed.
func releaseKey(tb testing.TB, seed byte) (ed25519.PrivateKey, identity.ID) {
	tb.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	id, err := identity.IDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		tb.Fatal(err)
	}
	return key, id
}

// kernelOf is a fake kernel of version v.
func kernelOf(v string) []byte { return bytes.Repeat([]byte("vmlinuz "+v+" "), 3000) }

// rootPattern is what root partition p holds before any update.
func rootPattern(p int) []byte {
	b := make([]byte, rootPartSize)
	for i := range b {
		b[i] = byte(i%251) ^ byte(p<<4)
	}
	return b
}

// fakeDevice is an appliance disk made of files: the boot partition
// (a FAT16 volume like image.Build writes, running root 2) and the two
// root partitions, plus the updater's directory on perm.
type fakeDevice struct {
	tb       testing.TB
	dir      string // the updater's directory
	boot     string
	roots    [2]string
	files    map[string][]byte // of the boot partition as built
	ext      map[string]fat16.Extent
	settings []byte
	key      ed25519.PrivateKey // the trusted release key
	keyID    identity.ID
}

func newFakeDevice(tb testing.TB) *fakeDevice {
	tb.Helper()
	tmp := tb.TempDir()
	d := &fakeDevice{
		tb:       tb,
		dir:      filepath.Join(tmp, "perm", "pc2", "update"),
		boot:     filepath.Join(tmp, "p1"),
		roots:    [2]string{filepath.Join(tmp, "p2"), filepath.Join(tmp, "p3")},
		settings: settingsJSON(`{"hostname":"the-device","update":{"url":"https://example.org/"}}`),
	}
	d.key, d.keyID = releaseKey(tb, 7)
	d.files = pcBootFiles(tb, gptRoot(devGUID, 2), kernelOf("1.0.0"), d.settings)
	vol, ext := buildVolume(tb, d.files)
	d.ext = ext
	for path, b := range map[string][]byte{d.boot: vol, d.roots[0]: rootPattern(2), d.roots[1]: rootPattern(3)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

func (d *fakeDevice) disk(running int) *Disk {
	return &Disk{Boot: d.boot, Roots: d.roots, Running: running}
}

// runningRelease is the release.json of version v (its min_version is
// "1.0.0").
func runningRelease(v string) ReleaseInfo {
	return ReleaseInfo{Version: v, Board: devBoard, Channel: Stable, MinVersion: "1.0.0"}
}

// updater returns an Updater of the device booted on partition running
// with release rel; edit may change its options.
func (d *fakeDevice) updater(running int, rel ReleaseInfo, edit func(*Options)) *Updater {
	d.tb.Helper()
	opts := Options{
		Dir:           d.dir,
		Disk:          d.disk(running),
		Release:       rel,
		Keys:          []identity.ID{d.keyID},
		HealthTimeout: 90 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(d.tb.Output(), nil)),
		Now:           devNow,
	}
	if edit != nil {
		edit(&opts)
	}
	u, err := New(opts)
	if err != nil {
		d.tb.Fatal(err)
	}
	return u
}

// snapshot returns the three partitions' bytes.
func (d *fakeDevice) snapshot() [3][]byte {
	d.tb.Helper()
	var out [3][]byte
	for i, p := range []string{d.boot, d.roots[0], d.roots[1]} {
		b, err := os.ReadFile(p)
		if err != nil {
			d.tb.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// checkUntouched checks that no partition changed since before and that
// nothing is left staged.
func (d *fakeDevice) checkUntouched(before [3][]byte) {
	d.tb.Helper()
	for i, b := range d.snapshot() {
		if !bytes.Equal(b, before[i]) {
			d.tb.Errorf("partition %d was written", i+1)
		}
	}
	d.checkNoStaging()
}

func (d *fakeDevice) checkNoStaging() {
	d.tb.Helper()
	if _, err := os.Stat(filepath.Join(d.dir, stagingDir)); !errors.Is(err, os.ErrNotExist) {
		d.tb.Errorf("staging folder: %v, want it gone", err)
	}
}

// state reads the updater's state file.
func (d *fakeDevice) state() *State {
	d.tb.Helper()
	st, err := (&store{dir: d.dir}).load()
	if err != nil {
		d.tb.Fatal(err)
	}
	return st
}

// bootFile reads a file of the boot partition.
func (d *fakeDevice) bootFile(name string) []byte {
	d.tb.Helper()
	vol, err := os.ReadFile(d.boot)
	if err != nil {
		d.tb.Fatal(err)
	}
	return readVolFile(d.tb, vol, name)
}

// checkCmdlines checks that every command line file is the one
// image.Build writes for root, without flags.
func (d *fakeDevice) checkCmdlines(root string) {
	d.tb.Helper()
	for name, want := range map[string][]byte{
		"cmdline.txt":                 cmdlineTxt(d.tb, root),
		"loader/entries/gokrazy.conf": gokrazyConf(d.tb, root),
		"syslinux.cfg":                syslinuxCfg(d.tb, root),
	} {
		if got := d.bootFile(name); !bytes.Equal(got, want) {
			d.tb.Errorf("%s:\n%q\nwant\n%q", name, got, want)
		}
	}
}

// gokrazyBootsInactive does what gokrazy's init does at the start of a
// test boot: it swaps its try flag for switch_on_boot in cmdline.txt.
func (d *fakeDevice) gokrazyBootsInactive() {
	d.tb.Helper()
	f, err := os.OpenFile(d.boot, os.O_RDWR, 0)
	if err != nil {
		d.tb.Fatal(err)
	}
	defer f.Close()
	b, err := fat16.ReadFile(f, "cmdline.txt")
	if err != nil {
		d.tb.Fatal(err)
	}
	if err := fat16.Rewrite(f, "cmdline.txt", gokrazySwitchEdit(d.tb, b)); err != nil {
		d.tb.Fatal(err)
	}
}

// relSpec describes a fake release.
type relSpec struct {
	version, minVersion string
	board               string // default devBoard
	kernel              []byte // default the device's
	untrimmed           bool   // the boot artifact keeps its trailing zeros
	key                 ed25519.PrivateKey
	edit                func(*Manifest)
}

// fakeRelease is a signed release bundle in a folder.
type fakeRelease struct {
	dir           string
	m             *Manifest
	manifest, sig []byte
	root, boot    []byte // the artifacts
}

// release writes the bundle of s to dir: a root "squashfs" of
// random bytes and a boot partition built on another disk (its root= names
// relGUID) with a placeholder settings file.
func (d *fakeDevice) release(dir string, s relSpec) *fakeRelease {
	d.tb.Helper()
	tb := d.tb
	if s.board == "" {
		s.board = devBoard
	}
	if s.kernel == nil {
		s.kernel = d.files["vmlinuz"]
	}
	if s.key == nil {
		s.key = d.key
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	var seed [32]byte
	copy(seed[:], s.version)
	root := make([]byte, 3<<19+333)
	rand.NewChaCha8(seed).Read(root)
	vol, _ := buildVolume(tb, pcBootFiles(tb, gptRoot(relGUID, 2), s.kernel, settingsJSON(`{}`)))
	boot := vol
	if !s.untrimmed {
		// As pc2 release writes it: without the trailing zero blocks.
		n := len(boot)
		for n > 0 && !slices.ContainsFunc(boot[n-4096:n], func(c byte) bool { return c != 0 }) {
			n -= 4096
		}
		boot = boot[:n]
	}
	r := &fakeRelease{dir: dir, root: root, boot: boot}
	arts := map[string]Artifact{}
	for name, b := range map[string][]byte{Root: root, Boot: boot} {
		p := filepath.Join(dir, name+".img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			tb.Fatal(err)
		}
		a, err := Describe(p)
		if err != nil {
			tb.Fatal(err)
		}
		arts[name] = a
	}
	files, err := BootPayload(bytes.NewReader(vol))
	if err != nil {
		tb.Fatal(err)
	}
	a := arts[Boot]
	a.Files = files
	arts[Boot] = a
	r.m = &Manifest{Format: Format, Version: s.version, Board: s.board, Channel: Stable, MinVersion: s.minVersion,
		Created: devNow().Add(-time.Hour), Artifacts: arts}
	if s.edit != nil {
		s.edit(r.m)
	}
	if r.manifest, r.sig, err = Sign(r.m, s.key); err != nil {
		tb.Fatal(err)
	}
	for name, b := range map[string][]byte{ManifestFile: r.manifest, SignatureFile: r.sig} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

// fetcher serves artifacts from memory and records what was asked.
type fetcher struct {
	mu    sync.Mutex
	arts  map[string]io.Reader
	asked []string
}

func (r *fakeRelease) fetcher() *fetcher {
	return &fetcher{arts: map[string]io.Reader{Root: bytes.NewReader(r.root), Boot: bytes.NewReader(r.boot)}}
}

func (f *fetcher) fetch(_ context.Context, name string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, name)
	r, ok := f.arts[name]
	if !ok {
		return nil, fmt.Errorf("no %s here", name)
	}
	return io.NopCloser(r), nil
}

func (f *fetcher) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// installRelease installs r on u from memory and returns the fetcher.
func installRelease(tb testing.TB, u *Updater, r *fakeRelease) *fetcher {
	tb.Helper()
	f := r.fetcher()
	m, err := u.Install(tb.Context(), "push", r.manifest, r.sig, f.fetch)
	if err != nil {
		tb.Fatalf("Install %s: %v", r.m.Version, err)
	}
	if m.Version != r.m.Version {
		tb.Fatalf("Install returned %s, want %s", m.Version, r.m.Version)
	}
	return f
}

// TestInstallTestBootCommit is the happy path: install on partition 2,
// gokrazy's test boot of partition 3, the commit, and the next boot.
func TestInstallTestBootCommit(t *testing.T) {
	d := newFakeDevice(t)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.5"})
	before := d.snapshot()
	u := d.updater(2, runningRelease("1.0.0"), nil)

	plan, err := u.Check(r.manifest, r.sig)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan.Needs, []string{Root}) || plan.Manifest.Version != "1.1.0" {
		t.Errorf("Check = %s needs %v, want 1.1.0 needs [root]", plan.Manifest.Version, plan.Needs)
	}

	f := installRelease(t, u, r)
	if got := f.names(); !slices.Equal(got, []string{Root}) {
		t.Errorf("fetched %v, want only the root (the boot payload is the same)", got)
	}
	after := d.snapshot()
	if p3 := after[2]; !bytes.Equal(p3[:len(r.root)], r.root) || !bytes.Equal(p3[len(r.root):], before[2][len(r.root):]) {
		t.Error("partition 3 does not hold the root artifact (followed by what was there)")
	}
	if !bytes.Equal(after[1], before[1]) {
		t.Error("partition 2, the running root, was written")
	}
	// The boot partition: only the data of cmdline.txt changed.
	e := d.ext["/cmdline.txt"]
	if !bytes.Equal(after[0][:e.Offset], before[0][:e.Offset]) || !bytes.Equal(after[0][e.Offset+e.Length:], before[0][e.Offset+e.Length:]) {
		t.Error("the boot partition changed outside cmdline.txt")
	}
	if got, want := d.bootFile("cmdline.txt"), gokrazyTryEdit(t, cmdlineTxt(t, gptRoot(devGUID, 2))); !bytes.Equal(got, want) {
		t.Errorf("cmdline.txt:\n%q\nwant\n%q", got, want)
	}
	d.checkNoStaging()
	p := d.state().Pending
	if p == nil {
		t.Fatal("no pending update in the state")
	}
	got := *p
	if !got.Installed.Equal(devNow()) {
		t.Errorf("pending installed at %v, want %v", got.Installed, devNow())
	}
	got.Installed = time.Time{}
	want := Pending{Version: "1.1.0", From: "1.0.0", MinVersion: "1.0.5", Partition: 3, Source: "push",
		HealthTimeout: config.Duration(90 * time.Second)}
	if got != want {
		t.Errorf("pending = %+v, want %+v", got, want)
	}
	st := u.Status(true)
	if st.Testing == nil || st.Testing.Version != "1.1.0" || st.Installing != "" || st.Partition != 2 {
		t.Errorf("Status = %+v, want 1.1.0 testing on partition 2", st)
	}
	if !strings.Contains(st.Log, "installing 1.1.0") || !strings.Contains(st.Log, "written to partition 3") {
		t.Errorf("the log lacks the install:\n%s", st.Log)
	}

	// The device reboots; gokrazy's init boots partition 3 once.
	d.gokrazyBootsInactive()
	u3 := d.updater(3, ReleaseInfo{Version: "1.1.0", Board: devBoard, MinVersion: "1.0.5"}, nil)
	bs, pend, err := u3.Resume()
	if err != nil || bs != TestBoot || pend == nil || pend.Version != "1.1.0" {
		t.Fatalf("Resume on the test boot = %v, %+v, %v; want TestBoot of 1.1.0", bs, pend, err)
	}
	if err := u3.Commit(); err != nil {
		t.Fatal(err)
	}
	d.checkCmdlines(gptRoot(devGUID, 3))
	st2 := d.state()
	if st2.Pending != nil || st2.Last == nil || st2.Last.Outcome != Installed || st2.Last.Version != "1.1.0" || st2.Last.From != "1.0.0" {
		t.Errorf("state after Commit: pending %+v, last %+v", st2.Pending, st2.Last)
	}
	if st2.Floor != "1.0.5" {
		t.Errorf("floor %q, want the manifest's min_version 1.0.5", st2.Floor)
	}
	if s := u3.Status(false); s.Testing != nil || s.Last == nil || s.Last.Outcome != Installed || s.Floor != "1.0.5" {
		t.Errorf("Status after Commit = %+v", s)
	}
	if err := u3.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}

	// The next boot is a normal one, on partition 3.
	bs, pend, err = d.updater(3, ReleaseInfo{Version: "1.1.0", Board: devBoard, MinVersion: "1.0.5"}, nil).Resume()
	if err != nil || bs != Normal || pend != nil {
		t.Errorf("Resume after the commit = %v, %+v, %v; want Normal", bs, pend, err)
	}
	d.checkCmdlines(gptRoot(devGUID, 3))
}

// startTestBoot installs a release of version v on the device running
// partition 2 and starts its test boot on partition 3.
func startTestBoot(tb testing.TB, d *fakeDevice, v string) *Updater {
	tb.Helper()
	installRelease(tb, d.updater(2, runningRelease("1.0.0"), nil), d.release(tb.TempDir(), relSpec{version: v, minVersion: "1.0.0"}))
	d.gokrazyBootsInactive()
	u3 := d.updater(3, runningRelease(v), nil)
	if bs, _, err := u3.Resume(); err != nil || bs != TestBoot {
		tb.Fatalf("Resume = %v, %v; want TestBoot", bs, err)
	}
	return u3
}

// checkRolledBack boots the old partition and checks that Resume records
// the rollback with a reason matching want.
func checkRolledBack(t testing.TB, d *fakeDevice, want func(string) bool) {
	t.Helper()
	u2 := d.updater(2, runningRelease("1.0.0"), nil)
	bs, p, err := u2.Resume()
	if err != nil || bs != Returned || p == nil || p.Version != "1.1.0" {
		t.Fatalf("Resume on the old root = %v, %+v, %v; want Returned from 1.1.0", bs, p, err)
	}
	st := d.state()
	if st.Pending != nil || st.Last == nil || st.Last.Outcome != RolledBack || st.Last.Version != "1.1.0" || !want(st.Last.Reason) {
		t.Errorf("state: pending %+v, last %+v", st.Pending, st.Last)
	}
	if st.Floor != "" {
		t.Errorf("a rollback set the floor to %q", st.Floor)
	}
	if s := u2.Status(false); s.Last == nil || s.Last.Outcome != RolledBack || s.Testing != nil {
		t.Errorf("Status = %+v, want rolled back", s)
	}
	d.checkCmdlines(gptRoot(devGUID, 2))
	if bs, _, err := d.updater(2, runningRelease("1.0.0"), nil).Resume(); err != nil || bs != Normal {
		t.Errorf("Resume on the next boot = %v, %v; want Normal", bs, err)
	}
}

func TestRollbackAfterFail(t *testing.T) {
	d := newFakeDevice(t)
	u3 := startTestBoot(t, d, "1.1.0")
	if err := u3.Fail("x"); err != nil {
		t.Fatal(err)
	}
	// Started again before the reboot: still the test boot, failed.
	bs, p, err := d.updater(3, runningRelease("1.1.0"), nil).Resume()
	if err != nil || bs != TestBoot || p.Failure != "x" {
		t.Errorf("Resume after Fail = %v, %+v, %v; want TestBoot with failure x", bs, p, err)
	}
	checkRolledBack(t, d, func(r string) bool { return r == "x" })
	if err := u3.Fail("late"); err == nil {
		t.Error("Fail outside a test boot succeeded")
	}
}

func TestRollbackNoReport(t *testing.T) {
	d := newFakeDevice(t)
	startTestBoot(t, d, "1.1.0")
	NoteExit(d.dir, d.disk(3), errors.New("first crash"))
	NoteExit(d.dir, d.disk(3), errors.New("the settings are\nbroken"))
	// Not in the test boot (wrong partition): not counted.
	NoteExit(d.dir, d.disk(2), errors.New("elsewhere"))
	checkRolledBack(t, d, func(r string) bool {
		return strings.Contains(r, "never reported a health check") &&
			strings.Contains(r, "exited 2 times") && strings.HasSuffix(r, "the settings are broken")
	})
}

func TestNoteExitOutsideTestBoot(t *testing.T) {
	d := newFakeDevice(t)
	NoteExit(d.dir, d.disk(2), errors.New("boom"))
	if _, err := os.Stat(filepath.Join(d.dir, exitsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NoteExit outside a test boot wrote %s (%v)", exitsFile, err)
	}
}

func TestResumeStates(t *testing.T) {
	t.Run("stale flag", func(t *testing.T) {
		d := newFakeDevice(t)
		f, err := os.OpenFile(d.boot, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := enableTestBoot(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		bs, _, err := d.updater(2, runningRelease("1.0.0"), nil).Resume()
		if err != nil || bs != Normal {
			t.Errorf("Resume = %v, %v; want Normal", bs, err)
		}
		d.checkCmdlines(gptRoot(devGUID, 2))
	})
	t.Run("committed, not recorded", func(t *testing.T) {
		d := newFakeDevice(t)
		startTestBoot(t, d, "1.1.0")
		f, err := os.OpenFile(d.boot, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := selectRoot(f, 3); err != nil {
			t.Fatal(err)
		}
		f.Close()
		bs, p, err := d.updater(3, runningRelease("1.1.0"), nil).Resume()
		if err != nil || bs != Committed || p == nil || p.Version != "1.1.0" {
			t.Errorf("Resume = %v, %+v, %v; want Committed", bs, p, err)
		}
		if st := d.state(); st.Pending != nil || st.Last == nil || st.Last.Outcome != Installed {
			t.Errorf("state: pending %+v, last %+v", st.Pending, st.Last)
		}
	})
}

func TestWatchTestBoot(t *testing.T) {
	type gate struct {
		slept    []time.Duration
		rebooted int
	}
	watch := func(t *testing.T, d *fakeDevice, running int, during func()) (*gate, error) {
		g := &gate{}
		err := WatchTestBoot(GateOptions{
			Dir:    d.dir,
			Disk:   d.disk(running),
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
			Sleep: func(dur time.Duration) {
				g.slept = append(g.slept, dur)
				if during != nil {
					during()
				}
			},
			Reboot: func() error { g.rebooted++; return nil },
		})
		return g, err
	}

	t.Run("no health check", func(t *testing.T) {
		d := newFakeDevice(t)
		startTestBoot(t, d, "1.1.0")
		NoteExit(d.dir, d.disk(3), errors.New("crashed"))
		g, err := watch(t, d, 3, nil)
		if err != nil || g.rebooted != 1 || !slices.Equal(g.slept, []time.Duration{90 * time.Second}) {
			t.Fatalf("WatchTestBoot = %v after sleeping %v, rebooted %d times; want one reboot after 1m30s", err, g.slept, g.rebooted)
		}
		p := d.state().Pending
		if p == nil || !strings.Contains(p.Failure, "no health check passed within 1m30s") || !strings.Contains(p.Failure, "exited 1 times, last:") {
			t.Fatalf("pending after the gate: %+v", p)
		}
		reason := p.Failure
		checkRolledBack(t, d, func(r string) bool { return r == reason })
	})
	t.Run("failed already", func(t *testing.T) {
		d := newFakeDevice(t)
		if err := startTestBoot(t, d, "1.1.0").Fail("no tunnel"); err != nil {
			t.Fatal(err)
		}
		g, err := watch(t, d, 3, nil)
		if err != nil || g.rebooted != 1 || len(g.slept) != 0 {
			t.Errorf("WatchTestBoot = %v after sleeping %v, rebooted %d times; want a reboot at once", err, g.slept, g.rebooted)
		}
		if p := d.state().Pending; p == nil || p.Failure != "no tunnel" {
			t.Errorf("pending %+v, want the failure kept", p)
		}
	})
	t.Run("committed meanwhile", func(t *testing.T) {
		d := newFakeDevice(t)
		u3 := startTestBoot(t, d, "1.1.0")
		g, err := watch(t, d, 3, func() {
			if err := u3.Commit(); err != nil {
				t.Error(err)
			}
		})
		if err != nil || g.rebooted != 0 || len(g.slept) != 1 {
			t.Errorf("WatchTestBoot = %v after sleeping %v, rebooted %d times; want no reboot", err, g.slept, g.rebooted)
		}
		if st := d.state(); st.Last == nil || st.Last.Outcome != Installed {
			t.Errorf("last %+v, want installed", st.Last)
		}
	})
	t.Run("no test boot", func(t *testing.T) {
		d := newFakeDevice(t)
		for _, running := range []int{2, 3} {
			if g, err := watch(t, d, running, nil); err != nil || g.rebooted != 0 || len(g.slept) != 0 {
				t.Errorf("running %d: WatchTestBoot = %v after sleeping %v, rebooted %d times", running, err, g.slept, g.rebooted)
			}
		}
		// Installed, not rebooted yet: still the old system.
		installRelease(t, d.updater(2, runningRelease("1.0.0"), nil), d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"}))
		if g, err := watch(t, d, 2, nil); err != nil || g.rebooted != 0 || len(g.slept) != 0 {
			t.Errorf("before the test boot: WatchTestBoot = %v after sleeping %v, rebooted %d times", err, g.slept, g.rebooted)
		}
	})
}

// checkRefused checks that err is want and that the device recorded the
// refusal of version v without writing anything.
func checkRefused(t testing.TB, d *fakeDevice, before [3][]byte, err, want error, v string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("Install = %v, want %v", err, want)
	}
	d.checkUntouched(before)
	st := d.state()
	if st.Pending != nil || st.Last == nil || st.Last.Outcome != Refused || st.Last.Version != v || st.Last.Reason != err.Error() {
		t.Errorf("state: pending %+v, last %+v; want %s refused", st.Pending, st.Last, v)
	}
}

func TestInstallRefused(t *testing.T) {
	other, _ := releaseKey(t, 8)
	for _, tc := range []struct {
		name string
		spec relSpec
		rel  ReleaseInfo
		opts func(*Options)
		// change the upload: the artifact served as root, the signature
		root func([]byte) []byte
		sig  func([]byte) []byte
		want error
	}{
		{name: "tampered root", root: func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b }, want: ErrArtifact},
		{name: "longer root", root: func(b []byte) []byte { return append(bytes.Clone(b), 0) }, want: ErrArtifact},
		{name: "shorter root", root: func(b []byte) []byte { return b[:len(b)-1] }, want: ErrArtifact},
		{name: "empty root", root: func([]byte) []byte { return nil }, want: ErrArtifact},
		{name: "unsigned", sig: func([]byte) []byte { return nil }, want: ErrUnsigned},
		{name: "garbled signature", sig: func([]byte) []byte { return []byte("not base64!\n") }, want: ErrBadSignature},
		{name: "other key", spec: relSpec{key: other}, want: ErrBadSignature},
		{name: "other board", spec: relSpec{board: "rpi4"}, want: ErrBoard},
		{name: "below the running min_version", rel: ReleaseInfo{Version: "1.2.0", Board: devBoard, MinVersion: "1.2.0"}, want: ErrDowngrade},
		{name: "no trusted keys", opts: func(o *Options) { o.Keys = nil }, want: ErrNoKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDevice(t)
			tc.spec.version, tc.spec.minVersion = "1.1.0", "1.0.0"
			r := d.release(t.TempDir(), tc.spec)
			if tc.rel.Version == "" {
				tc.rel = runningRelease("1.0.0")
			}
			u := d.updater(2, tc.rel, tc.opts)
			if tc.root != nil {
				r.root = tc.root(r.root)
			}
			if tc.sig != nil {
				r.sig = tc.sig(r.sig)
			}
			before := d.snapshot()
			f := r.fetcher()
			m, err := u.Install(t.Context(), "push", r.manifest, r.sig, f.fetch)
			if m != nil {
				t.Errorf("Install returned %+v", m)
			}
			checkRefused(t, d, before, err, tc.want, "1.1.0")
			if tc.root == nil && len(f.names()) != 0 {
				t.Errorf("fetched %v for a refused manifest", f.names())
			}
			if s := u.Status(false); s.Last == nil || s.Last.Outcome != Refused || s.Testing != nil {
				t.Errorf("Status = %+v, want refused", s)
			}
			if tc.root == nil {
				if _, err := u.Check(r.manifest, r.sig); !errors.Is(err, tc.want) {
					t.Errorf("Check = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

// TestInstallBelowFloor: the floor recorded by a commit holds even when
// the running release says less.
func TestInstallBelowFloor(t *testing.T) {
	d := newFakeDevice(t)
	installRelease(t, d.updater(2, runningRelease("1.0.0"), nil), d.release(t.TempDir(), relSpec{version: "1.3.0", minVersion: "1.2.0"}))
	d.gokrazyBootsInactive()
	if err := d.updater(3, runningRelease("1.3.0"), nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if f := d.state().Floor; f != "1.2.0" {
		t.Fatalf("floor %q, want 1.2.0", f)
	}
	u := d.updater(3, runningRelease("1.3.0"), nil) // min_version 1.0.0
	if f := u.Status(false).Floor; f != "1.2.0" {
		t.Errorf("Status floor %q, want 1.2.0", f)
	}
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	before := d.snapshot()
	_, err := u.Install(t.Context(), "push", r.manifest, r.sig, r.fetcher().fetch)
	checkRefused(t, d, before, err, ErrDowngrade, "1.1.0")
	if st := d.state(); st.Floor != "1.2.0" {
		t.Errorf("the refusal changed the floor to %q", st.Floor)
	}
	// At the floor is allowed.
	installRelease(t, u, d.release(t.TempDir(), relSpec{version: "1.2.0", minVersion: "1.0.0"}))
}

// TestCommitFloorWithoutMinVersion: a release.json without min_version
// still records the installed manifest's min_version as the floor.
func TestCommitFloorWithoutMinVersion(t *testing.T) {
	d := newFakeDevice(t)
	installRelease(t, d.updater(2, ReleaseInfo{Version: "1.0.0", Board: devBoard}, nil), d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.5"}))
	d.gokrazyBootsInactive()
	if err := d.updater(3, ReleaseInfo{Version: "1.1.0", Board: devBoard}, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if f := d.state().Floor; f != "1.0.5" {
		t.Errorf("floor %q, want 1.0.5", f)
	}
}

func TestInstallWhileTesting(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	installRelease(t, u, d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"}))
	last := d.state().Last
	r := d.release(t.TempDir(), relSpec{version: "1.2.0", minVersion: "1.0.0"})
	before := d.snapshot()
	f := r.fetcher()
	if _, err := u.Install(t.Context(), "push", r.manifest, r.sig, f.fetch); !errors.Is(err, ErrTesting) || !strings.Contains(err.Error(), "1.1.0") {
		t.Errorf("Install during a pending test boot = %v, want ErrTesting naming 1.1.0", err)
	}
	d.checkUntouched(before)
	if st := d.state(); st.Pending == nil || st.Pending.Version != "1.1.0" || st.Last != last {
		t.Errorf("state: pending %+v, last %+v; want 1.1.0 still pending", st.Pending, st.Last)
	}
	if len(f.names()) != 0 {
		t.Errorf("fetched %v", f.names())
	}
}

// blockingReader blocks its first Read until release is closed.
type blockingReader struct {
	started chan<- struct{}
	release <-chan struct{}
	r       io.Reader
	once    sync.Once
}

func (b *blockingReader) Read(p []byte) (int, error) {
	b.once.Do(func() {
		close(b.started)
		<-b.release
	})
	return b.r.Read(p)
}

func TestInstallBusy(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	started, release := make(chan struct{}), make(chan struct{})
	f := r.fetcher()
	f.arts[Root] = &blockingReader{started: started, release: release, r: bytes.NewReader(r.root)}
	done := make(chan error, 1)
	go func() {
		_, err := u.Install(t.Context(), "push", r.manifest, r.sig, f.fetch)
		done <- err
	}()
	<-started
	if s := u.Status(false); s.Installing != "1.1.0" {
		t.Errorf("Status.Installing = %q during the install, want 1.1.0", s.Installing)
	}
	r2 := d.release(t.TempDir(), relSpec{version: "1.2.0", minVersion: "1.0.0"})
	f2 := r2.fetcher()
	if _, err := u.Install(t.Context(), "push", r2.manifest, r2.sig, f2.fetch); !errors.Is(err, ErrBusy) {
		t.Errorf("a second Install = %v, want ErrBusy", err)
	}
	if len(f2.names()) != 0 {
		t.Errorf("the second install fetched %v", f2.names())
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the first Install: %v", err)
	}
	if p := d.state().Pending; p == nil || p.Version != "1.1.0" {
		t.Errorf("pending %+v, want 1.1.0", p)
	}
	if s := u.Status(false); s.Installing != "" {
		t.Errorf("Status.Installing = %q after the install", s.Installing)
	}
}

func TestInstallBoot(t *testing.T) {
	for _, untrimmed := range []bool{false, true} {
		t.Run(fmt.Sprintf("untrimmed=%t", untrimmed), func(t *testing.T) {
			d := newFakeDevice(t)
			u := d.updater(2, runningRelease("1.0.0"), nil)
			r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0"), untrimmed: untrimmed})
			if untrimmed != (len(r.boot) == bootVolSize) || len(r.boot) == 0 {
				t.Fatalf("the boot artifact is %d bytes (untrimmed %t)", len(r.boot), untrimmed)
			}
			plan, err := u.Check(r.manifest, r.sig)
			if err != nil || !slices.Equal(plan.Needs, []string{Root, Boot}) {
				t.Fatalf("Check = %+v, %v; want needs root and boot", plan, err)
			}
			before := d.snapshot()
			f := installRelease(t, u, r)
			if got := f.names(); !slices.Equal(got, []string{Root, Boot}) {
				t.Errorf("fetched %v, want root then boot", got)
			}
			after := d.snapshot()
			if !bytes.Equal(after[1], before[1]) {
				t.Error("partition 2, the running root, was written")
			}
			if !bytes.Equal(after[2][:len(r.root)], r.root) {
				t.Error("partition 3 does not hold the root artifact")
			}
			if !bytes.Equal(d.bootFile("vmlinuz"), kernelOf("1.1.0")) {
				t.Error("the boot partition does not have the new kernel")
			}
			// The release's payload, this device's command lines (its own
			// disk GUID, the running root) and settings.
			have, err := BootPayload(bytes.NewReader(after[0]))
			if err != nil || !maps.Equal(have, r.m.Artifacts[Boot].Files) {
				t.Errorf("boot payload %v, %v; want the release's", have, err)
			}
			if got, want := d.bootFile("cmdline.txt"), gokrazyTryEdit(t, cmdlineTxt(t, gptRoot(devGUID, 2))); !bytes.Equal(got, want) {
				t.Errorf("cmdline.txt:\n%q\nwant\n%q", got, want)
			}
			for name, want := range map[string][]byte{
				"loader/entries/gokrazy.conf": gokrazyConf(t, gptRoot(devGUID, 2)),
				"syslinux.cfg":                syslinuxCfg(t, gptRoot(devGUID, 2)),
				settingsFile:                  d.settings,
			} {
				if got := d.bootFile(name); !bytes.Equal(got, want) {
					t.Errorf("%s:\n%q\nwant\n%q", name, got, want)
				}
			}
			if p := d.state().Pending; p == nil || !p.BootWritten {
				t.Errorf("pending %+v, want BootWritten", p)
			}
			d.checkNoStaging()

			// The test boot and commit work on the new boot partition.
			d.gokrazyBootsInactive()
			u3 := d.updater(3, runningRelease("1.1.0"), nil)
			if bs, _, err := u3.Resume(); err != nil || bs != TestBoot {
				t.Fatalf("Resume = %v, %v; want TestBoot", bs, err)
			}
			if err := u3.Commit(); err != nil {
				t.Fatal(err)
			}
			d.checkCmdlines(gptRoot(devGUID, 3))
			if !bytes.Equal(d.bootFile(settingsFile), d.settings) {
				t.Error("the commit lost the device settings")
			}
		})
	}
}

func TestInstallBootOfOtherKind(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0")})
	// An MBR-style boot partition for a GPT device.
	files := pcBootFiles(t, mbrRoot(2), kernelOf("1.1.0"), settingsJSON(`{}`))
	vol, _ := buildVolume(t, files)
	r.boot = vol
	a := r.m.Artifacts[Boot]
	a.Size, a.SHA256 = int64(len(vol)), sha256Hex(vol)
	r.m.Artifacts[Boot] = a
	var err error
	if r.manifest, r.sig, err = Sign(r.m, d.key); err != nil {
		t.Fatal(err)
	}
	before := d.snapshot()
	_, err = u.Install(t.Context(), "push", r.manifest, r.sig, r.fetcher().fetch)
	checkRefused(t, d, before, err, ErrArtifact, "1.1.0")
}

func TestInstallFetchFails(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0")})
	lost := errors.New("connection reset by peer")
	for name, f := range map[string]*fetcher{
		"root midway": {arts: map[string]io.Reader{Root: io.MultiReader(bytes.NewReader(r.root[:len(r.root)/2]), iotest.ErrReader(lost))}},
		"boot midway": {arts: map[string]io.Reader{Root: bytes.NewReader(r.root), Boot: io.MultiReader(bytes.NewReader(r.boot[:4096]), iotest.ErrReader(lost))}},
		"no boot":     {arts: map[string]io.Reader{Root: bytes.NewReader(r.root)}},
	} {
		before := d.snapshot()
		_, err := u.Install(t.Context(), "pull", r.manifest, r.sig, f.fetch)
		if err == nil || errors.Is(err, ErrArtifact) {
			t.Errorf("%s: Install = %v, want a failure", name, err)
		}
		d.checkUntouched(before)
		if st := d.state(); st.Pending != nil || st.Last == nil || st.Last.Outcome != Failed || st.Last.Reason != err.Error() {
			t.Errorf("%s: state: pending %+v, last %+v; want failed", name, st.Pending, st.Last)
		}
	}
	installRelease(t, u, r)
	if !bytes.Equal(d.bootFile("vmlinuz"), kernelOf("1.1.0")) {
		t.Error("the later install did not write the boot partition")
	}
}

// TestInstallNoSpace: a manifest whose artifacts do not fit perm is
// refused before anything is fetched.
func TestInstallNoSpace(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", edit: func(m *Manifest) {
		a := m.Artifacts[Root]
		a.Size = 1 << 60
		m.Artifacts[Root] = a
	}})
	before := d.snapshot()
	f := r.fetcher()
	if _, err := u.Install(t.Context(), "push", r.manifest, r.sig, f.fetch); !errors.Is(err, errNoSpace) {
		t.Errorf("Install = %v, want errNoSpace", err)
	}
	d.checkUntouched(before)
	if len(f.names()) != 0 {
		t.Errorf("fetched %v", f.names())
	}
	if st := d.state(); st.Last == nil || st.Last.Outcome != Failed {
		t.Errorf("last %+v, want failed", st.Last)
	}
}

// TestInstallRootTooLarge: a root that does not fit the partition fails
// before any partition is written.
func TestInstallRootTooLarge(t *testing.T) {
	d := newFakeDevice(t)
	u := d.updater(2, runningRelease("1.0.0"), nil)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	r.root = make([]byte, rootPartSize+512)
	a := r.m.Artifacts[Root]
	a.Size, a.SHA256 = int64(len(r.root)), sha256Hex(r.root)
	r.m.Artifacts[Root] = a
	var err error
	if r.manifest, r.sig, err = Sign(r.m, d.key); err != nil {
		t.Fatal(err)
	}
	before := d.snapshot()
	if _, err := u.Install(t.Context(), "push", r.manifest, r.sig, r.fetcher().fetch); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("Install = %v, want a root that does not fit", err)
	}
	d.checkUntouched(before)
}
