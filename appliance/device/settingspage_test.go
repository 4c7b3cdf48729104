package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/services/cloud"
)

// fakeBoot is a device's boot partition, boot clock and restarts for the
// settings page's keeper.
type fakeBoot struct {
	t    *testing.T
	path string // the trial record

	mu       sync.Mutex
	onBoot   *settings.Settings // the boot partition's settings
	writeErr error
	writes   int
	reboots  int
	uptime   time.Duration
	bootID   string
	stop     func() // ends the last start's count
}

// start is a start of the device service on what the boot partition
// holds (the last one ends); it runs the trial's count, if any.
func (f *fakeBoot) start() *trialKeeper {
	f.t.Helper()
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
	f.mu.Lock()
	cur := f.onBoot.Clone()
	f.mu.Unlock()
	k := &trialKeeper{log: slog.New(slog.NewTextHandler(testlog.Writer(f.t), nil)), path: f.path, current: cur,
		write: func(s *settings.Settings) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.writeErr != nil {
				return f.writeErr
			}
			f.writes++
			f.onBoot = s.Clone()
			return nil
		},
		reboot: func() error { f.mu.Lock(); f.reboots++; f.mu.Unlock(); return nil },
		uptime: func() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return f.uptime },
		bootID: func() string { f.mu.Lock(); defer f.mu.Unlock(); return f.bootID },
		tick:   time.Millisecond, delay: time.Millisecond, now: time.Now}
	if count := k.start(); count != nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { count(ctx); close(done) }()
		f.stop = func() { cancel(); <-done }
		f.t.Cleanup(f.stop)
	}
	return k
}

// reboot is a new boot: a new kernel boot ID, the boot clock from 0.
func (f *fakeBoot) reboot(id string) {
	f.mu.Lock()
	f.bootID, f.uptime = id, 0
	f.mu.Unlock()
}

func (f *fakeBoot) advance(d time.Duration) { f.mu.Lock(); f.uptime += d; f.mu.Unlock() }

func (f *fakeBoot) counts() (writes, reboots int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes, f.reboots
}

func newFakeBoot(t *testing.T, s *settings.Settings) *fakeBoot {
	return &fakeBoot{t: t, path: filepath.Join(t.TempDir(), "pc2", "settings-trial.json"), onBoot: s, bootID: "boot-1"}
}

// form is the page's form for k, as the owner sends it back unchanged
// but for change.
func form(k *trialKeeper, change func(*cloud.SettingsForm)) cloud.SettingsForm {
	f := k.Form()
	f.Trial, f.Last, f.UpdateServer = nil, "", ""
	for i := range f.WiFi {
		f.WiFi[i].Set = false
	}
	if change != nil {
		change(&f)
	}
	return f
}

func startSettings() *settings.Settings {
	return &settings.Settings{Profile: settings.Personal, Hostname: "pc2", Supernodes: []string{"/ip4/10.0.2.2/tcp/8090/p2p/12D3KooWGmsAL7HcHFwYrYmSGhuEd5gHoFZ5tJJVYzb5X8KXvD8N"}, WiFi: &settings.WiFi{SSID: "home", Passphrase: "secret passphrase"},
		Update: &settings.Update{URL: "https://updates.test/"}}
}

// TestSettingsApply: a change without the network is written and the
// device restarts on it, no trial; the form shows the settings and never
// the Wi-Fi passphrase, which stays when the network's name does; bad
// forms are refused with the checks' words and write nothing.
func TestSettingsApply(t *testing.T) {
	fb := newFakeBoot(t, startSettings())
	k := fb.start()
	f := k.Form()
	if f.Hostname != "pc2" || f.Static || !reflect.DeepEqual(f.WiFi, []cloud.WiFiNetwork{{SSID: "home", Set: true}, {}}) ||
		f.UpdateServer != "https://updates.test/" || f.TrialMinutes != settings.DefaultTrialMinutes || f.Trial != nil {
		t.Fatalf("form %+v", f)
	}
	for _, bad := range []struct {
		change func(*cloud.SettingsForm)
		want   string
	}{
		{nil, "nothing changed"},
		{func(f *cloud.SettingsForm) { f.Hostname = "bad_name" }, "letters, digits"},
		{func(f *cloud.SettingsForm) { f.Static = true }, "static needs at least one address"},
		{func(f *cloud.SettingsForm) { f.Static, f.Addresses = true, "10.0.0.300/24" }, "10.0.0.300"},
		{func(f *cloud.SettingsForm) { f.Addresses = "10.0.0.3/24" }, "fixed address"},
		{func(f *cloud.SettingsForm) { f.UpdateWindow = "25:00-03:00" }, "update window"},
		{func(f *cloud.SettingsForm) { f.UpdateChannel = "nightly" }, "channel"},
		{func(f *cloud.SettingsForm) { f.NTP = "-x" }, "ntp"},
		{func(f *cloud.SettingsForm) { f.WiFi[1].Passphrase = "orphan passphrase" }, "needs the network's name"},
		{func(f *cloud.SettingsForm) { f.WiFi[0].Passphrase = "short" }, "passphrase"},
		{func(f *cloud.SettingsForm) { f.WiFi[1].SSID = "home" }, "listed twice"},
		{func(f *cloud.SettingsForm) { f.WiFi[0].SSID, f.TrialMinutes = "other", 0 }, "minutes to keep"},
		{func(f *cloud.SettingsForm) { f.WiFi[0].SSID, f.TrialMinutes = "other", 31 }, "minutes to keep"},
	} {
		if _, err := k.Apply(form(k, bad.change)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("refused form: %v, want %q", err, bad.want)
		}
	}
	if w, r := fb.counts(); w != 0 || r != 0 {
		t.Fatalf("refused forms wrote %d times, restarted %d", w, r)
	}

	msg, err := k.Apply(form(k, func(f *cloud.SettingsForm) {
		f.Hostname, f.UpdateChannel, f.UpdateWindow, f.UpdateManual, f.NTP = "box", "beta", "02:00-05:00", true, "10.0.2.2, time.test"
	}))
	if err != nil || !strings.Contains(msg, "http://box.local:4200/") || strings.Contains(msg, "trial") {
		t.Fatalf("apply: %q, %v", msg, err)
	}
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 1 })
	if _, err := k.Apply(form(k, func(f *cloud.SettingsForm) { f.Hostname = "again" })); err == nil {
		t.Error("a second change while restarting was taken")
	}
	fb.reboot("boot-2")
	k = fb.start()
	got := k.current
	if got.Hostname != "box" || got.Update.Channel != "beta" || got.Update.Window != "02:00-05:00" || !got.Update.Manual ||
		got.Update.URL != "https://updates.test/" || strings.Join(got.NTP, " ") != "10.0.2.2 time.test" ||
		got.WiFi.Passphrase != "secret passphrase" || got.Network != nil {
		t.Errorf("settings after the restart: %+v", got)
	}
	if tr, _ := settings.LoadTrial(fb.path); tr != nil || k.Form().Trial != nil {
		t.Errorf("a change without the network left a trial: %+v", tr)
	}

	// Wi-Fi networks: a second one, then the two swapped with blank
	// passphrases: each passphrase stays with its network. A Wi-Fi change
	// runs on trial.
	for i, change := range []func(*cloud.SettingsForm){
		func(f *cloud.SettingsForm) {
			f.WiFi[1] = cloud.WiFiNetwork{SSID: "hotspot", Passphrase: "hotspot passphrase"}
		},
		func(f *cloud.SettingsForm) { f.WiFi[0].SSID, f.WiFi[1].SSID = "hotspot", "home" },
	} {
		if _, err := k.Apply(form(k, change)); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 2+i })
		fb.reboot(fmt.Sprint("boot-wifi-", i))
		k = fb.start()
		if err := k.Keep(); err != nil {
			t.Fatalf("Wi-Fi change %d not on trial: %v", i, err)
		}
	}
	if w := wifiNetworks(k.current); len(w) != 2 || w[0] != (settings.WiFi{SSID: "hotspot", Passphrase: "hotspot passphrase"}) ||
		w[1] != (settings.WiFi{SSID: "home", Passphrase: "secret passphrase"}) {
		t.Errorf("Wi-Fi networks after the swap: %+v", w)
	}

	// A write that fails: said, nothing recorded, no restart.
	fb.mu.Lock()
	fb.writeErr = errors.New("disk gone")
	fb.mu.Unlock()
	if _, err := k.Apply(form(k, func(f *cloud.SettingsForm) { f.WiFi[0].SSID = "other" })); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Errorf("failed write: %v", err)
	}
	if tr, _ := settings.LoadTrial(fb.path); tr != nil {
		t.Errorf("a failed write left a trial: %+v", tr)
	}
}

// TestSettingsTrial: a network change runs on trial after the restart;
// kept by the owner, it stays; not kept in time, or undone, the device
// writes the previous settings back and restarts on them. The count goes
// on across restarts of the service in one boot and starts again after a
// power cut.
func TestSettingsTrial(t *testing.T) {
	fb := newFakeBoot(t, startSettings())
	k := fb.start()
	static := func(f *cloud.SettingsForm) {
		f.Static, f.Addresses, f.Gateway4, f.DNS, f.TrialMinutes = true, "10.0.2.15/24", "10.0.2.2", "10.0.2.3", 2
	}
	msg, err := k.Apply(form(k, static))
	if err != nil || !strings.Contains(msg, "on trial") || !strings.Contains(msg, "http://10.0.2.15:4200/") || !strings.Contains(msg, "2 minutes") {
		t.Fatalf("apply: %q, %v", msg, err)
	}
	if tr, err := settings.LoadTrial(fb.path); err != nil || tr.State != settings.TrialPending || tr.Previous.Network != nil || tr.New.Network == nil {
		t.Fatalf("trial record %+v, %v", tr, err)
	}
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 1 })

	// On the new settings: the owner has 2 minutes.
	fb.reboot("boot-2")
	fb.advance(10 * time.Second)
	k = fb.start()
	if k.current.Network.Interfaces[0].Addresses[0] != "10.0.2.15/24" {
		t.Fatalf("running %+v", k.current.Network)
	}
	if tr := k.Form().Trial; tr == nil || tr.Left != 2*time.Minute {
		t.Fatalf("trial %+v, want 2m left", tr)
	}
	if _, err := k.Apply(form(k, func(f *cloud.SettingsForm) { f.Hostname = "other" })); err == nil || !strings.Contains(err.Error(), "on trial first") {
		t.Errorf("a change during a trial: %v", err)
	}
	// The service restarts in the same boot: the count goes on.
	fb.advance(time.Minute)
	k = fb.start()
	if tr := k.Form().Trial; tr == nil || tr.Left != time.Minute {
		t.Fatalf("after a service restart: trial %+v, want 1m left", tr)
	}
	if err := k.Keep(); err != nil {
		t.Fatal(err)
	}
	fb.advance(5 * time.Minute)
	time.Sleep(20 * time.Millisecond)
	if w, r := fb.counts(); w != 1 || r != 1 {
		t.Fatalf("after keeping: %d writes, %d restarts, want the change's only", w, r)
	}
	if err := k.Keep(); err == nil {
		t.Error("kept twice")
	}
	if f := k.Form(); f.Trial != nil || !strings.Contains(f.Last, "was kept") {
		t.Errorf("form after keeping: %+v", f)
	}
	fb.reboot("boot-3")
	if k = fb.start(); k.Form().Trial != nil || !strings.Contains(k.Form().Last, "was kept") {
		t.Errorf("next start after keeping: %+v", k.Form())
	}

	// A wrong address, not kept: a power cut during the trial starts the
	// count again, then the device goes back by itself.
	wrong := func(f *cloud.SettingsForm) { f.Addresses, f.TrialMinutes = "10.0.2.99/24", 1 }
	if _, err := k.Apply(form(k, wrong)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 2 })
	fb.reboot("boot-4")
	fb.advance(50 * time.Second)
	fb.start()
	fb.reboot("boot-5") // a power cut: the count starts again
	k = fb.start()
	fb.advance(50 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if w, r := fb.counts(); w != 2 || r != 2 || k.Form().Trial == nil {
		t.Fatalf("50 s into the second count: %d writes, %d restarts, trial %+v", w, r, k.Form().Trial)
	}
	fb.advance(11 * time.Second)
	testenv.WaitFor(t, 10*time.Second, "the return", func() bool { _, r := fb.counts(); return r == 3 })
	if tr, _ := settings.LoadTrial(fb.path); tr == nil || tr.State != settings.TrialReturned || !strings.Contains(tr.Reason, "not kept within 1 minute") {
		t.Fatalf("record after the return: %+v", tr)
	}
	fb.reboot("boot-6")
	k = fb.start()
	if a := k.current.Network.Interfaces[0].Addresses[0]; a != "10.0.2.15/24" {
		t.Errorf("after the return: %s, want the kept 10.0.2.15/24", a)
	}
	if f := k.Form(); f.Trial != nil || !strings.Contains(f.Last, "returned to its previous network settings") || !strings.Contains(f.Last, "not kept") {
		t.Errorf("form after the return: %+v", f)
	}

	// Undone by the owner: back at once.
	if _, err := k.Apply(form(k, func(f *cloud.SettingsForm) { f.Static, f.Addresses, f.Gateway4, f.TrialMinutes = false, "", "", 5 })); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 4 })
	fb.reboot("boot-7")
	k = fb.start()
	if in := k.current.Network.Interfaces[0]; in.Mode != settings.ModeDHCP || len(in.DNS) != 1 {
		t.Fatalf("DHCP on trial: %+v", in)
	}
	if err := k.Undo(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 5 })
	fb.reboot("boot-8")
	if k = fb.start(); k.current.Network.Interfaces[0].Mode != settings.ModeStatic || !strings.Contains(k.Form().Last, "undone by the owner") {
		t.Errorf("after undo: %+v, %q", k.current.Network, k.Form().Last)
	}
	if err := k.Undo(); err == nil {
		t.Error("undo without a trial")
	}
}

// TestSettingsTrialCuts: records a power cut leaves are finished at the
// next start: a trial whose settings were never written is dropped, a
// return cut before or after its write completes, a record of settings
// changed elsewhere (the card edited) is dropped, a broken record removed.
func TestSettingsTrialCuts(t *testing.T) {
	prev := startSettings()
	next := prev.Clone()
	next.WiFi = &settings.WiFi{SSID: "other"}
	record := func(fb *fakeBoot, state string) {
		t.Helper()
		tr := &settings.Trial{State: state, Previous: prev, New: next, Minutes: 5, Reason: "not kept within 5 minutes"}
		if err := tr.Save(fb.path); err != nil {
			t.Fatal(err)
		}
	}
	// Never written.
	fb := newFakeBoot(t, prev)
	record(fb, settings.TrialPending)
	fb.start()
	if tr, _ := settings.LoadTrial(fb.path); tr != nil {
		t.Errorf("unwritten trial kept: %+v", tr)
	}
	// A return cut before its write: written at this start, restarted.
	fb = newFakeBoot(t, next)
	record(fb, settings.TrialReturning)
	fb.start()
	testenv.WaitFor(t, 10*time.Second, "restart", func() bool { _, r := fb.counts(); return r == 1 })
	if w, _ := fb.counts(); w != 1 || !settings.Same(fb.onBoot, prev) {
		t.Errorf("return not finished: %d writes, boot has %+v", w, fb.onBoot)
	}
	fb.reboot("boot-2")
	if k := fb.start(); !strings.Contains(k.Form().Last, "returned") {
		t.Errorf("after the finished return: %q", k.Form().Last)
	}
	// A return cut after its write: recorded.
	fb = newFakeBoot(t, prev)
	record(fb, settings.TrialReturning)
	if k := fb.start(); !strings.Contains(k.Form().Last, "returned") {
		t.Errorf("return cut after the write: %q", k.Form().Last)
	}
	// Changed elsewhere.
	other := prev.Clone()
	other.Hostname = "edited"
	fb = newFakeBoot(t, other)
	record(fb, settings.TrialPending)
	if k := fb.start(); k.Form().Trial != nil {
		t.Error("a trial of settings changed elsewhere runs")
	}
	if tr, _ := settings.LoadTrial(fb.path); tr != nil {
		t.Errorf("trial of settings changed elsewhere kept: %+v", tr)
	}
	// Broken.
	fb = newFakeBoot(t, prev)
	record(fb, settings.TrialPending)
	if err := writeFile(fb.path, "{"); err != nil {
		t.Fatal(err)
	}
	if k := fb.start(); k.Form().Trial != nil {
		t.Error("a broken record runs a trial")
	}
	if tr, err := settings.LoadTrial(fb.path); tr != nil || err != nil {
		t.Errorf("broken record: %+v, %v", tr, err)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
