package update_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/memvol"
	"github.com/pc2/pc2/internal/testing/updatetest"
)

// TestInstallTestBootCommit is the happy path: install on partition 2,
// the test boot of partition 3 (its init selects 2 again for any later
// start), the commit, and the next boot.
func TestInstallTestBootCommit(t *testing.T) {
	d := updatetest.NewDevice(t)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.5"})
	before := d.Snapshot()
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)

	plan, err := u.Check(r.Raw, r.Sig)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan.Needs, []string{manifest.Root}) || plan.Manifest.Version != "1.1.0" {
		t.Errorf("Check = %s needs %v, want 1.1.0 needs [root]", plan.Manifest.Version, plan.Needs)
	}

	f := updatetest.InstallRelease(t, u, r)
	if got := f.Names(); !slices.Equal(got, []string{manifest.Root}) {
		t.Errorf("fetched %v, want only the root (the boot payload is the same)", got)
	}
	after := d.Snapshot()
	if p3 := after[2]; !bytes.Equal(p3[:len(r.Root)], r.Root) || !bytes.Equal(p3[len(r.Root):], before[2][len(r.Root):]) {
		t.Error("partition 3 does not hold the root artifact (followed by what was there)")
	}
	if !bytes.Equal(after[1], before[1]) {
		t.Error("partition 2, the running root, was written")
	}
	// The boot partition: only the selectors changed, to slot b.
	d.CheckSelected(3)
	checkBootFiles(t, d, d.Files)
	d.CheckNoStaging()
	p := d.State().Pending
	if p == nil {
		t.Fatal("no pending update in the state")
	}
	got := *p
	if !got.Installed.Equal(updatetest.Now()) {
		t.Errorf("pending installed at %v, want %v", got.Installed, updatetest.Now())
	}
	got.Installed = time.Time{}
	want := update.Pending{Version: "1.1.0", From: "1.0.0", MinVersion: "1.0.5", Partition: 3, Source: "push",
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

	// The device reboots into slot b; its init selects slot a again
	// before anything else runs.
	rebooted := 0
	d.BeginTestBoot(3, &rebooted)
	d.CheckSelected(2)
	u3 := d.Updater(3, manifest.ReleaseInfo{Version: "1.1.0", Board: updatetest.Board, MinVersion: "1.0.5"}, nil)
	bs, pend, err := u3.Resume()
	if err != nil || bs != update.TestBoot || pend == nil || pend.Version != "1.1.0" {
		t.Fatalf("Resume on the test boot = %v, %+v, %v; want TestBoot of 1.1.0", bs, pend, err)
	}
	if err := u3.Commit(); err != nil {
		t.Fatal(err)
	}
	d.CheckSelected(3)
	st2 := d.State()
	if st2.Pending != nil || st2.Last == nil || st2.Last.Outcome != update.Installed || st2.Last.Version != "1.1.0" || st2.Last.From != "1.0.0" {
		t.Errorf("state after Commit: pending %+v, last %+v", st2.Pending, st2.Last)
	}
	if st2.Floor != "1.0.5" {
		t.Errorf("floor %q, want the manifest's min_version 1.0.5", st2.Floor)
	}
	if s := u3.Status(false); s.Testing != nil || s.Last == nil || s.Last.Outcome != update.Installed || s.Floor != "1.0.5" {
		t.Errorf("Status after Commit = %+v", s)
	}
	if err := u3.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}

	// The next boot is a normal one, on partition 3.
	bs, pend, err = d.Updater(3, manifest.ReleaseInfo{Version: "1.1.0", Board: updatetest.Board, MinVersion: "1.0.5"}, nil).Resume()
	if err != nil || bs != update.Normal || pend != nil {
		t.Errorf("Resume after the commit = %v, %+v, %v; want Normal", bs, pend, err)
	}
	d.CheckSelected(3)
	if rebooted != 0 {
		t.Errorf("the init's gate rebooted %d times", rebooted)
	}
}

// checkBootFiles checks that the device's boot partition holds want's
// files, except the selectors (CheckSelected checks those).
func checkBootFiles(t testing.TB, d *updatetest.Device, want map[string][]byte) {
	t.Helper()
	for name, b := range want {
		if name == "loader/entries/gokrazy.conf" || name == "syslinux.cfg" {
			continue
		}
		if !bytes.Equal(d.BootFile(name), b) {
			t.Errorf("boot file %s changed", name)
		}
	}
}

// startTestBoot installs a release of version v on the device running
// partition 2 and starts its test boot on partition 3.
func startTestBoot(tb testing.TB, d *updatetest.Device, v string) *update.Updater {
	tb.Helper()
	updatetest.InstallRelease(tb, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), d.Release(tb.TempDir(), updatetest.RelSpec{Version: v, MinVersion: "1.0.0"}))
	d.BeginTestBoot(3, new(int))
	u3 := d.Updater(3, updatetest.RunningRelease(v), nil)
	if bs, _, err := u3.Resume(); err != nil || bs != update.TestBoot {
		tb.Fatalf("Resume = %v, %v; want TestBoot", bs, err)
	}
	return u3
}

// checkRolledBack boots the old partition and checks that Resume records
// the rollback with a reason matching want.
func checkRolledBack(t testing.TB, d *updatetest.Device, want func(string) bool) {
	t.Helper()
	u2 := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	bs, p, err := u2.Resume()
	if err != nil || bs != update.Returned || p == nil || p.Version != "1.1.0" {
		t.Fatalf("Resume on the old root = %v, %+v, %v; want Returned from 1.1.0", bs, p, err)
	}
	st := d.State()
	if st.Pending != nil || st.Last == nil || st.Last.Outcome != update.RolledBack || st.Last.Version != "1.1.0" || !want(st.Last.Reason) {
		t.Errorf("state: pending %+v, last %+v", st.Pending, st.Last)
	}
	if st.Floor != "" {
		t.Errorf("a rollback set the floor to %q", st.Floor)
	}
	if s := u2.Status(false); s.Last == nil || s.Last.Outcome != update.RolledBack || s.Testing != nil {
		t.Errorf("Status = %+v, want rolled back", s)
	}
	d.CheckSelected(2)
	if bs, _, err := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil).Resume(); err != nil || bs != update.Normal {
		t.Errorf("Resume on the next boot = %v, %v; want Normal", bs, err)
	}
}

func TestRollbackAfterFail(t *testing.T) {
	d := updatetest.NewDevice(t)
	u3 := startTestBoot(t, d, "1.1.0")
	if err := u3.Fail("x"); err != nil {
		t.Fatal(err)
	}
	// Started again before the reboot: still the test boot, failed.
	bs, p, err := d.Updater(3, updatetest.RunningRelease("1.1.0"), nil).Resume()
	if err != nil || bs != update.TestBoot || p.Failure != "x" {
		t.Errorf("Resume after Fail = %v, %+v, %v; want TestBoot with failure x", bs, p, err)
	}
	checkRolledBack(t, d, func(r string) bool { return r == "x" })
	if err := u3.Fail("late"); err == nil {
		t.Error("Fail outside a test boot succeeded")
	}
}

func TestRollbackNoReport(t *testing.T) {
	d := updatetest.NewDevice(t)
	startTestBoot(t, d, "1.1.0")
	update.NoteExit(d.Dir, d.Disk(3), errors.New("first crash"))
	update.NoteExit(d.Dir, d.Disk(3), errors.New("the settings are\nbroken"))
	// Not in the test boot (wrong partition): not counted.
	update.NoteExit(d.Dir, d.Disk(2), errors.New("elsewhere"))
	checkRolledBack(t, d, func(r string) bool {
		return strings.Contains(r, "never reported a health check") &&
			strings.Contains(r, "exited 2 times") && strings.HasSuffix(r, "the settings are broken")
	})
}

func TestNoteExitOutsideTestBoot(t *testing.T) {
	d := updatetest.NewDevice(t)
	update.NoteExit(d.Dir, d.Disk(2), errors.New("boom"))
	if _, err := os.Stat(filepath.Join(d.Dir, update.ExitsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NoteExit outside a test boot wrote %s (%v)", update.ExitsFile, err)
	}
}

func TestResumeStates(t *testing.T) {
	t.Run("selection without an update", func(t *testing.T) {
		// The state on perm was lost while slot b was selected: the
		// running version is selected again.
		d := updatetest.NewDevice(t)
		selectRoot(t, d, 3)
		bs, _, err := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil).Resume()
		if err != nil || bs != update.Normal {
			t.Errorf("Resume = %v, %v; want Normal", bs, err)
		}
		d.CheckSelected(2)
	})
	t.Run("install interrupted", func(t *testing.T) {
		// The power went while an install was writing: the next start
		// says so.
		d := updatetest.NewDevice(t)
		if err := os.MkdirAll(d.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		st := `{"installing": {"version": "1.1.0", "from": "1.0.0", "outcome": "", "source": "push", "time": "2025-06-01T11:00:00Z"}}`
		if err := os.WriteFile(filepath.Join(d.Dir, "state.json"), []byte(st), 0o600); err != nil {
			t.Fatal(err)
		}
		bs, _, err := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil).Resume()
		if err != nil || bs != update.Normal {
			t.Errorf("Resume = %v, %v; want Normal", bs, err)
		}
		if s := d.State(); s.Installing != nil || s.Last == nil || s.Last.Outcome != update.Failed || s.Last.Version != "1.1.0" ||
			!strings.Contains(s.Last.Reason, "interrupted") {
			t.Errorf("state: installing %+v, last %+v; want 1.1.0 failed, interrupted", s.Installing, s.Last)
		}
	})
	t.Run("selectors disagree", func(t *testing.T) {
		// A power cut between the entry's and syslinux.cfg's writes of
		// a selection: the next start names the running slot in both.
		d := updatetest.NewDevice(t)
		f, err := os.OpenFile(d.Boot, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		root3 := updatetest.GPTRoot(updatetest.DevGUID, 3)
		if err := fat16.Rewrite(f, "loader/entries/gokrazy.conf", updatetest.Entry(t, "b", root3)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		bs, _, err := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil).Resume()
		if err != nil || bs != update.Normal {
			t.Errorf("Resume = %v, %v; want Normal", bs, err)
		}
		d.CheckSelected(2)
	})
	t.Run("written, the reboot not yet", func(t *testing.T) {
		d := updatetest.NewDevice(t)
		updatetest.InstallRelease(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"}))
		bs, p, err := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil).Resume()
		if err != nil || bs != update.Normal || p == nil || p.Version != "1.1.0" {
			t.Errorf("Resume = %v, %+v, %v; want Normal with 1.1.0 pending", bs, p, err)
		}
		d.CheckSelected(3)
	})
	t.Run("committed, not recorded", func(t *testing.T) {
		// The commit selected slot b and the power went before the state
		// was saved: the next start is a test boot again.
		d := updatetest.NewDevice(t)
		startTestBoot(t, d, "1.1.0")
		selectRoot(t, d, 3)
		d.BeginTestBoot(3, new(int))
		d.CheckSelected(2)
		u3 := d.Updater(3, updatetest.RunningRelease("1.1.0"), nil)
		bs, p, err := u3.Resume()
		if err != nil || bs != update.TestBoot || p == nil || p.Version != "1.1.0" {
			t.Errorf("Resume = %v, %+v, %v; want TestBoot", bs, p, err)
		}
		if err := u3.Commit(); err != nil {
			t.Fatal(err)
		}
		if st := d.State(); st.Pending != nil || st.Last == nil || st.Last.Outcome != update.Installed {
			t.Errorf("state: pending %+v, last %+v", st.Pending, st.Last)
		}
		d.CheckSelected(3)
	})
}

// selectRoot selects root partition p on the device's boot partition.
func selectRoot(t testing.TB, d *updatetest.Device, p int) {
	t.Helper()
	f, err := os.OpenFile(d.Boot, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := update.SelectRoot(f, p); err != nil {
		t.Fatal(err)
	}
}

func TestBeginTestBoot(t *testing.T) {
	type gate struct {
		slept    []time.Duration
		rebooted int
	}
	watch := func(t *testing.T, d *updatetest.Device, running int, during func()) (*gate, error) {
		g := &gate{}
		w, err := update.BeginTestBoot(update.GateOptions{
			Dir:    d.Dir,
			Disk:   d.Disk(running),
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
			Sleep: func(dur time.Duration) {
				g.slept = append(g.slept, dur)
				if during != nil {
					during()
				}
			},
			Reboot: func() error { g.rebooted++; return nil },
		})
		if err != nil {
			return g, err
		}
		return g, w()
	}

	t.Run("no health check", func(t *testing.T) {
		d := updatetest.NewDevice(t)
		startTestBoot(t, d, "1.1.0")
		update.NoteExit(d.Dir, d.Disk(3), errors.New("crashed"))
		g, err := watch(t, d, 3, nil)
		if err != nil || g.rebooted != 1 || !slices.Equal(g.slept, []time.Duration{90 * time.Second}) {
			t.Fatalf("BeginTestBoot = %v after sleeping %v, rebooted %d times; want one reboot after 1m30s", err, g.slept, g.rebooted)
		}
		p := d.State().Pending
		if p == nil || !strings.Contains(p.Failure, "no health check passed within 1m30s") || !strings.Contains(p.Failure, "exited 1 times, last:") {
			t.Fatalf("pending after the gate: %+v", p)
		}
		reason := p.Failure
		d.CheckSelected(2)
		checkRolledBack(t, d, func(r string) bool { return r == reason })
	})
	t.Run("failed already", func(t *testing.T) {
		d := updatetest.NewDevice(t)
		if err := startTestBoot(t, d, "1.1.0").Fail("no tunnel"); err != nil {
			t.Fatal(err)
		}
		g, err := watch(t, d, 3, nil)
		if err != nil || g.rebooted != 1 || len(g.slept) != 0 {
			t.Errorf("BeginTestBoot = %v after sleeping %v, rebooted %d times; want a reboot at once", err, g.slept, g.rebooted)
		}
		if p := d.State().Pending; p == nil || p.Failure != "no tunnel" {
			t.Errorf("pending %+v, want the failure kept", p)
		}
	})
	t.Run("committed meanwhile", func(t *testing.T) {
		d := updatetest.NewDevice(t)
		u3 := startTestBoot(t, d, "1.1.0")
		g, err := watch(t, d, 3, func() {
			if err := u3.Commit(); err != nil {
				t.Error(err)
			}
		})
		if err != nil || g.rebooted != 0 || len(g.slept) != 1 {
			t.Errorf("BeginTestBoot = %v after sleeping %v, rebooted %d times; want no reboot", err, g.slept, g.rebooted)
		}
		if st := d.State(); st.Last == nil || st.Last.Outcome != update.Installed {
			t.Errorf("last %+v, want installed", st.Last)
		}
	})
	t.Run("no test boot", func(t *testing.T) {
		d := updatetest.NewDevice(t)
		for _, running := range []int{2, 3} {
			if g, err := watch(t, d, running, nil); err != nil || g.rebooted != 0 || len(g.slept) != 0 {
				t.Errorf("running %d: BeginTestBoot = %v after sleeping %v, rebooted %d times", running, err, g.slept, g.rebooted)
			}
		}
		// Installed, not rebooted yet: still the old system.
		updatetest.InstallRelease(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"}))
		if g, err := watch(t, d, 2, nil); err != nil || g.rebooted != 0 || len(g.slept) != 0 {
			t.Errorf("before the test boot: BeginTestBoot = %v after sleeping %v, rebooted %d times", err, g.slept, g.rebooted)
		}
		d.CheckSelected(3)
	})
}

// checkRefused checks that err is want and that the device recorded the
// refusal of version v without writing anything.
func checkRefused(t testing.TB, d *updatetest.Device, before [3][]byte, err, want error, v string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("Install = %v, want %v", err, want)
	}
	d.CheckUntouched(before)
	st := d.State()
	if st.Pending != nil || st.Last == nil || st.Last.Outcome != update.Refused || st.Last.Version != v || st.Last.Reason != err.Error() {
		t.Errorf("state: pending %+v, last %+v; want %s refused", st.Pending, st.Last, v)
	}
}

func TestInstallRefused(t *testing.T) {
	other, _ := updatetest.ReleaseKey(t, 8)
	for _, tc := range []struct {
		name string
		spec updatetest.RelSpec
		rel  manifest.ReleaseInfo
		opts func(*update.Options)
		// change the upload: the artifact served as root, the signature
		root func([]byte) []byte
		sig  func([]byte) []byte
		want error
	}{
		{name: "tampered root", root: func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b }, want: manifest.ErrArtifact},
		{name: "longer root", root: func(b []byte) []byte { return append(bytes.Clone(b), 0) }, want: manifest.ErrArtifact},
		{name: "shorter root", root: func(b []byte) []byte { return b[:len(b)-1] }, want: manifest.ErrArtifact},
		{name: "empty root", root: func([]byte) []byte { return nil }, want: manifest.ErrArtifact},
		{name: "unsigned", sig: func([]byte) []byte { return nil }, want: manifest.ErrUnsigned},
		{name: "garbled signature", sig: func([]byte) []byte { return []byte("not base64!\n") }, want: manifest.ErrBadSignature},
		{name: "other key", spec: updatetest.RelSpec{Key: other}, want: manifest.ErrBadSignature},
		{name: "other board", spec: updatetest.RelSpec{Board: "rpi4"}, want: manifest.ErrBoard},
		{name: "below the running min_version", rel: manifest.ReleaseInfo{Version: "1.2.0", Board: updatetest.Board, MinVersion: "1.2.0"}, want: manifest.ErrDowngrade},
		{name: "no trusted keys", opts: func(o *update.Options) { o.Keys = nil }, want: update.ErrNoKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := updatetest.NewDevice(t)
			tc.spec.Version, tc.spec.MinVersion = "1.1.0", "1.0.0"
			r := d.Release(t.TempDir(), tc.spec)
			if tc.rel.Version == "" {
				tc.rel = updatetest.RunningRelease("1.0.0")
			}
			u := d.Updater(2, tc.rel, tc.opts)
			if tc.root != nil {
				r.Root = tc.root(r.Root)
			}
			if tc.sig != nil {
				r.Sig = tc.sig(r.Sig)
			}
			before := d.Snapshot()
			f := r.Fetcher()
			m, err := u.Install(t.Context(), "push", r.Raw, r.Sig, f.Fetch)
			if m != nil {
				t.Errorf("Install returned %+v", m)
			}
			checkRefused(t, d, before, err, tc.want, "1.1.0")
			if tc.root == nil && len(f.Names()) != 0 {
				t.Errorf("fetched %v for a refused manifest", f.Names())
			}
			if s := u.Status(false); s.Last == nil || s.Last.Outcome != update.Refused || s.Testing != nil {
				t.Errorf("Status = %+v, want refused", s)
			}
			if tc.root == nil {
				if _, err := u.Check(r.Raw, r.Sig); !errors.Is(err, tc.want) {
					t.Errorf("Check = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

// TestInstallBelowFloor: the floor recorded by a commit holds even when
// the running release says less.
func TestInstallBelowFloor(t *testing.T) {
	d := updatetest.NewDevice(t)
	updatetest.InstallRelease(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.3.0", MinVersion: "1.2.0"}))
	d.BeginTestBoot(3, new(int))
	if err := d.Updater(3, updatetest.RunningRelease("1.3.0"), nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if f := d.State().Floor; f != "1.2.0" {
		t.Fatalf("floor %q, want 1.2.0", f)
	}
	u := d.Updater(3, updatetest.RunningRelease("1.3.0"), nil) // min_version 1.0.0
	if f := u.Status(false).Floor; f != "1.2.0" {
		t.Errorf("Status floor %q, want 1.2.0", f)
	}
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	before := d.Snapshot()
	_, err := u.Install(t.Context(), "push", r.Raw, r.Sig, r.Fetcher().Fetch)
	checkRefused(t, d, before, err, manifest.ErrDowngrade, "1.1.0")
	if st := d.State(); st.Floor != "1.2.0" {
		t.Errorf("the refusal changed the floor to %q", st.Floor)
	}
	// At the floor is allowed.
	updatetest.InstallRelease(t, u, d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.2.0", MinVersion: "1.0.0"}))
}

// TestCommitFloorWithoutMinVersion: a release.json without min_version
// still records the installed manifest's min_version as the floor.
func TestCommitFloorWithoutMinVersion(t *testing.T) {
	d := updatetest.NewDevice(t)
	updatetest.InstallRelease(t, d.Updater(2, manifest.ReleaseInfo{Version: "1.0.0", Board: updatetest.Board}, nil), d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.5"}))
	d.BeginTestBoot(3, new(int))
	if err := d.Updater(3, manifest.ReleaseInfo{Version: "1.1.0", Board: updatetest.Board}, nil).Commit(); err != nil {
		t.Fatal(err)
	}
	if f := d.State().Floor; f != "1.0.5" {
		t.Errorf("floor %q, want 1.0.5", f)
	}
}

func TestInstallWhileTesting(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	updatetest.InstallRelease(t, u, d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"}))
	last := d.State().Last
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.2.0", MinVersion: "1.0.0"})
	before := d.Snapshot()
	f := r.Fetcher()
	if _, err := u.Install(t.Context(), "push", r.Raw, r.Sig, f.Fetch); !errors.Is(err, update.ErrTesting) || !strings.Contains(err.Error(), "1.1.0") {
		t.Errorf("Install during a pending test boot = %v, want ErrTesting naming 1.1.0", err)
	}
	d.CheckUntouched(before)
	if st := d.State(); st.Pending == nil || st.Pending.Version != "1.1.0" || st.Last != last {
		t.Errorf("state: pending %+v, last %+v; want 1.1.0 still pending", st.Pending, st.Last)
	}
	if len(f.Names()) != 0 {
		t.Errorf("fetched %v", f.Names())
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
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	started, release := make(chan struct{}), make(chan struct{})
	f := r.Fetcher()
	f.Arts[manifest.Root] = &blockingReader{started: started, release: release, r: bytes.NewReader(r.Root)}
	done := make(chan error, 1)
	go func() {
		_, err := u.Install(t.Context(), "push", r.Raw, r.Sig, f.Fetch)
		done <- err
	}()
	<-started
	if s := u.Status(false); s.Installing != "1.1.0" || s.Progress == nil || s.Progress.Step != "receiving the root" ||
		s.Progress.Total != int64(len(r.Root)) || s.Progress.Done != 0 {
		t.Errorf("Status during the install: installing %q, progress %+v; want 1.1.0 receiving the root, 0 of %d", s.Installing, s.Progress, len(r.Root))
	}
	r2 := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.2.0", MinVersion: "1.0.0"})
	f2 := r2.Fetcher()
	if _, err := u.Install(t.Context(), "push", r2.Raw, r2.Sig, f2.Fetch); !errors.Is(err, update.ErrBusy) {
		t.Errorf("a second Install = %v, want ErrBusy", err)
	}
	if len(f2.Names()) != 0 {
		t.Errorf("the second install fetched %v", f2.Names())
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the first Install: %v", err)
	}
	if p := d.State().Pending; p == nil || p.Version != "1.1.0" {
		t.Errorf("pending %+v, want 1.1.0", p)
	}
	if s := u.Status(false); s.Installing != "" || s.Progress != nil {
		t.Errorf("Status after the install: installing %q, progress %+v", s.Installing, s.Progress)
	}
}

func TestInstallBoot(t *testing.T) {
	for _, untrimmed := range []bool{false, true} {
		t.Run(fmt.Sprintf("untrimmed=%t", untrimmed), func(t *testing.T) {
			d := updatetest.NewDevice(t)
			u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
			r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0"), Untrimmed: untrimmed})
			if untrimmed != (len(r.Boot) == updatetest.BootVolSize) || len(r.Boot) == 0 {
				t.Fatalf("the boot artifact is %d bytes (untrimmed %t)", len(r.Boot), untrimmed)
			}
			plan, err := u.Check(r.Raw, r.Sig)
			if err != nil || !slices.Equal(plan.Needs, []string{manifest.Root, manifest.Boot}) {
				t.Fatalf("Check = %+v, %v; want needs root and boot", plan, err)
			}
			before := d.Snapshot()
			f := updatetest.InstallRelease(t, u, r)
			if got := f.Names(); !slices.Equal(got, []string{manifest.Root, manifest.Boot}) {
				t.Errorf("fetched %v, want root then boot", got)
			}
			after := d.Snapshot()
			if !bytes.Equal(after[1], before[1]) {
				t.Error("partition 2, the running root, was written")
			}
			if !bytes.Equal(after[2][:len(r.Root)], r.Root) {
				t.Error("partition 3 does not hold the root artifact")
			}
			// Slot b has the new kernel with this disk's root= for partition
			// 3; slot a, the running version's, is untouched.
			if !bytes.Equal(d.BootFile("b/vmlinuz"), updatetest.KernelOf("1.1.0")) {
				t.Error("slot b does not have the new kernel")
			}
			want := maps.Clone(d.Files)
			delete(want, "b/vmlinuz")
			checkBootFiles(t, d, want)
			have, err := manifest.BootPayload(bytes.NewReader(after[0]), "b")
			if err != nil || !maps.Equal(have, r.Manifest.Artifacts[manifest.Boot].Files) {
				t.Errorf("slot b's payload %v, %v; want the release's", have, err)
			}
			d.CheckSelected(3)
			if p := d.State().Pending; p == nil || !p.BootWritten {
				t.Errorf("pending %+v, want BootWritten", p)
			}
			if log := u.Status(true).Log; !strings.Contains(log, "boot slot b written (vmlinuz;") {
				t.Errorf("the log does not tell what was written to slot b:\n%s", log)
			}
			memvol.FsckClean(t, after[0])
			d.CheckNoStaging()

			// The test boot and commit work on the new boot partition.
			d.BeginTestBoot(3, new(int))
			d.CheckSelected(2)
			u3 := d.Updater(3, updatetest.RunningRelease("1.1.0"), nil)
			if bs, _, err := u3.Resume(); err != nil || bs != update.TestBoot {
				t.Fatalf("Resume = %v, %v; want TestBoot", bs, err)
			}
			if err := u3.Commit(); err != nil {
				t.Fatal(err)
			}
			d.CheckSelected(3)
			if !bytes.Equal(d.BootFile(manifest.SettingsFile), d.Settings) {
				t.Error("the commit lost the device settings")
			}
		})
	}
}

func TestInstallBootOfOtherKind(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
	// An MBR-style boot partition for a GPT device.
	files := updatetest.PCBootFiles(t, updatetest.MBRRoot(2), updatetest.KernelOf("1.1.0"), updatetest.KernelOf("1.1.0"), updatetest.SettingsJSON(`{}`))
	vol, _ := updatetest.BuildVolume(t, files)
	r.Boot = vol
	a := r.Manifest.Artifacts[manifest.Boot]
	a.Size, a.SHA256 = int64(len(vol)), updatetest.SHA256(vol)
	r.Manifest.Artifacts[manifest.Boot] = a
	var err error
	if r.Raw, r.Sig, err = manifest.Sign(r.Manifest, d.Key); err != nil {
		t.Fatal(err)
	}
	before := d.Snapshot()
	_, err = u.Install(t.Context(), "push", r.Raw, r.Sig, r.Fetcher().Fetch)
	checkRefused(t, d, before, err, manifest.ErrArtifact, "1.1.0")
}

func TestInstallFetchFails(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
	lost := errors.New("connection reset by peer")
	for name, f := range map[string]*updatetest.Fetcher{
		"root midway": {Arts: map[string]io.Reader{manifest.Root: io.MultiReader(bytes.NewReader(r.Root[:len(r.Root)/2]), iotest.ErrReader(lost))}},
		"boot midway": {Arts: map[string]io.Reader{manifest.Root: bytes.NewReader(r.Root), manifest.Boot: io.MultiReader(bytes.NewReader(r.Boot[:4096]), iotest.ErrReader(lost))}},
		"no boot":     {Arts: map[string]io.Reader{manifest.Root: bytes.NewReader(r.Root)}},
	} {
		before := d.Snapshot()
		_, err := u.Install(t.Context(), "pull", r.Raw, r.Sig, f.Fetch)
		if err == nil || errors.Is(err, manifest.ErrArtifact) {
			t.Errorf("%s: Install = %v, want a failure", name, err)
		}
		d.CheckUntouched(before)
		if st := d.State(); st.Pending != nil || st.Last == nil || st.Last.Outcome != update.Failed || st.Last.Reason != err.Error() {
			t.Errorf("%s: state: pending %+v, last %+v; want failed", name, st.Pending, st.Last)
		}
	}
	updatetest.InstallRelease(t, u, r)
	if !bytes.Equal(d.BootFile("b/vmlinuz"), updatetest.KernelOf("1.1.0")) {
		t.Error("the later install did not write slot b")
	}
}

// TestInstallNoSpace: a manifest whose artifacts do not fit perm is
// refused before anything is fetched.
func TestInstallNoSpace(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Edit: func(m *manifest.Manifest) {
		a := m.Artifacts[manifest.Root]
		a.Size = 1 << 60
		m.Artifacts[manifest.Root] = a
	}})
	before := d.Snapshot()
	f := r.Fetcher()
	if _, err := u.Install(t.Context(), "push", r.Raw, r.Sig, f.Fetch); !errors.Is(err, update.ErrNoSpace) {
		t.Errorf("Install = %v, want errNoSpace", err)
	}
	d.CheckUntouched(before)
	if len(f.Names()) != 0 {
		t.Errorf("fetched %v", f.Names())
	}
	if st := d.State(); st.Last == nil || st.Last.Outcome != update.Failed {
		t.Errorf("last %+v, want failed", st.Last)
	}
}

// TestInstallRootTooLarge: a root that does not fit the partition fails
// before any partition is written.
func TestInstallRootTooLarge(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	r.Root = make([]byte, updatetest.RootPartSize+512)
	a := r.Manifest.Artifacts[manifest.Root]
	a.Size, a.SHA256 = int64(len(r.Root)), updatetest.SHA256(r.Root)
	r.Manifest.Artifacts[manifest.Root] = a
	var err error
	if r.Raw, r.Sig, err = manifest.Sign(r.Manifest, d.Key); err != nil {
		t.Fatal(err)
	}
	before := d.Snapshot()
	if _, err := u.Install(t.Context(), "push", r.Raw, r.Sig, r.Fetcher().Fetch); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("Install = %v, want a root that does not fit", err)
	}
	d.CheckUntouched(before)
}

// TestInstallBootRollback: a release with a new kernel fails its test
// boot; the device returns to the old root with the old kernel (slot a
// was never written), and the same release installs again later.
func TestInstallBootRollback(t *testing.T) {
	d := updatetest.NewDevice(t)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
	updatetest.InstallRelease(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), r)
	d.BeginTestBoot(3, new(int))
	u3 := d.Updater(3, updatetest.RunningRelease("1.1.0"), nil)
	if bs, _, err := u3.Resume(); err != nil || bs != update.TestBoot {
		t.Fatalf("Resume = %v, %v; want TestBoot", bs, err)
	}
	if err := u3.Fail("no tunnel"); err != nil {
		t.Fatal(err)
	}
	checkRolledBack(t, d, func(r string) bool { return r == "no tunnel" })
	if !bytes.Equal(d.BootFile("a/vmlinuz"), d.Files["a/vmlinuz"]) {
		t.Error("slot a, the old version's kernel, changed")
	}
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	// Slot b already holds this release's kernel: only the root.
	if plan, err := u.Check(r.Raw, r.Sig); err != nil || !slices.Equal(plan.Needs, []string{manifest.Root}) {
		t.Fatalf("Check = %+v, %v; want needs root only", plan, err)
	}
	updatetest.InstallRelease(t, u, r)
	d.CheckSelected(3)
}

// TestInstallBootNoPlace: a release whose boot files do not fit this
// device's layout (a new file; a changed file the boot loader finds by
// its sectors) is refused before anything is written.
func TestInstallBootNoPlace(t *testing.T) {
	for name, edit := range map[string]func(map[string][]byte){
		"new device tree": func(f map[string][]byte) { f["a/new.dtb"] = []byte("dtb") },
		"new SYSLINUX":    func(f map[string][]byte) { f["ldlinux.c32"] = []byte("another syslinux") },
	} {
		t.Run(name, func(t *testing.T) {
			d := updatetest.NewDevice(t)
			u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
			r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
			files := updatetest.PCBootFiles(t, updatetest.GPTRoot(updatetest.RelGUID, 2), updatetest.KernelOf("1.1.0"), updatetest.KernelOf("1.1.0"), updatetest.SettingsJSON(`{}`))
			edit(files)
			vol, _ := updatetest.BuildVolume(t, files)
			payload, err := manifest.BootPayload(bytes.NewReader(vol), "")
			if err != nil {
				t.Fatal(err)
			}
			r.Boot = vol
			a := r.Manifest.Artifacts[manifest.Boot]
			a.Size, a.SHA256, a.Files = int64(len(vol)), updatetest.SHA256(vol), payload
			r.Manifest.Artifacts[manifest.Boot] = a
			if r.Raw, r.Sig, err = manifest.Sign(r.Manifest, d.Key); err != nil {
				t.Fatal(err)
			}
			before := d.Snapshot()
			_, err = u.Install(t.Context(), "push", r.Raw, r.Sig, r.Fetcher().Fetch)
			if !errors.Is(err, update.ErrBootLayout) || !strings.Contains(err.Error(), "reflash") {
				t.Errorf("Install = %v, want ErrBootLayout", err)
			}
			d.CheckUntouched(before)
			if st := d.State(); st.Pending != nil || st.Last == nil || st.Last.Outcome != update.Failed {
				t.Errorf("state: pending %+v, last %+v; want failed", st.Pending, st.Last)
			}
		})
	}
}

// TestInstallFreshDevice: as flashed, slot b's kernel is an empty file;
// the first update writes it even when the release's kernel is the
// running one, and only then selects slot b. A release without a boot
// artifact is refused: nothing could fill the slot.
func TestInstallFreshDevice(t *testing.T) {
	d := updatetest.NewDevice(t)
	d.Files = updatetest.PCBootFiles(t, updatetest.GPTRoot(updatetest.DevGUID, 2), updatetest.KernelOf("1.0.0"), []byte{}, d.Settings)
	vol, _ := updatetest.BuildVolume(t, d.Files)
	if err := os.WriteFile(d.Boot, vol, 0o600); err != nil {
		t.Fatal(err)
	}
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)

	noBoot := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Edit: func(m *manifest.Manifest) {
		delete(m.Artifacts, manifest.Boot)
	}})
	before := d.Snapshot()
	_, err := u.Install(t.Context(), "push", noBoot.Raw, noBoot.Sig, noBoot.Fetcher().Fetch)
	checkRefused(t, d, before, err, manifest.ErrArtifact, "1.1.0")

	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	if plan, err := u.Check(r.Raw, r.Sig); err != nil || !slices.Equal(plan.Needs, []string{manifest.Root, manifest.Boot}) {
		t.Fatalf("Check = %+v, %v; want root and boot (slot b is empty)", plan, err)
	}
	updatetest.InstallRelease(t, u, r)
	if !bytes.Equal(d.BootFile("b/vmlinuz"), updatetest.KernelOf("1.0.0")) {
		t.Error("slot b does not hold the release's kernel")
	}
	d.CheckSelected(3)
}

// TestInstallKeepsLdlinuxSys: a release whose ldlinux.sys differs (SYSLINUX's
// installer placed it elsewhere on that image, after a kernel of another
// size) installs, and the device keeps its own, which its boot sector
// finds by its sectors.
func TestInstallKeepsLdlinuxSys(t *testing.T) {
	d := updatetest.NewDevice(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
	files := updatetest.PCBootFiles(t, updatetest.GPTRoot(updatetest.RelGUID, 2), updatetest.KernelOf("1.1.0"), updatetest.KernelOf("1.1.0"), updatetest.SettingsJSON(`{}`))
	files["ldlinux.sys"] = bytes.Repeat([]byte("LDLINUX elsewhere "), 400)
	vol, _ := updatetest.BuildVolume(t, files)
	payload, err := manifest.BootPayload(bytes.NewReader(vol), "")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(payload, r.Manifest.Artifacts[manifest.Boot].Files) {
		t.Fatalf("ldlinux.sys changed the boot payload: %v", payload)
	}
	r.Boot = vol
	a := r.Manifest.Artifacts[manifest.Boot]
	a.Size, a.SHA256 = int64(len(vol)), updatetest.SHA256(vol)
	r.Manifest.Artifacts[manifest.Boot] = a
	if r.Raw, r.Sig, err = manifest.Sign(r.Manifest, d.Key); err != nil {
		t.Fatal(err)
	}
	updatetest.InstallRelease(t, u, r)
	if !bytes.Equal(d.BootFile("ldlinux.sys"), d.Files["ldlinux.sys"]) {
		t.Error("the device's ldlinux.sys was replaced")
	}
	if !bytes.Equal(d.BootFile("b/vmlinuz"), updatetest.KernelOf("1.1.0")) {
		t.Error("slot b does not hold the new kernel")
	}
	d.CheckSelected(3)
}
