package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/rootdisk"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/services/cloud"
)

// Settings from the dashboard (cloud.DeviceSettings, the settings page).
//
// The device checks a change as `pc2 image settings` does (profile.Check),
// writes it to its boot partition so that a power cut leaves the old file
// or the new one (settings.WriteDevice), and restarts on it: the init reads
// some settings before any service starts (the host name, which
// interfaces get a DHCP client, the time servers), so a restart is the
// one way every setting takes effect as it does at any start.
//
// A change of the network (wired addressing, Wi-Fi) can cut the owner off
// the device, so it runs on trial (settings.Trial, on perm): the previous
// settings are recorded before the new ones are written; after the
// restart the owner has the chosen minutes to keep them from the
// dashboard, which proves the dashboard is reachable on them. Otherwise
// the device writes the previous settings back and restarts on them, as
// a router does. The minutes are counted on the boot clock of the start
// that runs the new settings, so a crashing service does not restart the
// count, and a power cut starts it again.

// restartDelay lets the page that says the device restarts reach the
// browser first.
const restartDelay = 2 * time.Second

// trialKeeper is the device's side of the settings page.
type trialKeeper struct {
	log *slog.Logger
	// path is the trial record; current the settings this start runs.
	path    string
	current *settings.Settings
	// write puts settings on the boot partition; reboot restarts.
	write  func(*settings.Settings) error
	reboot func() error
	// uptime is the boot clock and bootID this boot's kernel ID.
	uptime func() time.Duration
	bootID func() string
	// tick is how often the count is looked at (default 1 s) and delay
	// how long a restart waits (default restartDelay).
	tick, delay time.Duration
	now         func() time.Time

	mu    sync.Mutex
	trial *settings.Trial
	// deadline is the boot clock's time when the trial this start runs
	// ends (0: none runs).
	deadline time.Duration
	kept     chan struct{}
	// restarting: a change is written and the device restarts.
	restarting bool
}

// newTrialKeeper returns the settings page's keeper for d.
func (d *Device) newTrialKeeper() *trialKeeper {
	return &trialKeeper{
		log:     d.log.With("service", "settings"),
		path:    filepath.Join(d.opts.PermDir, "pc2", "settings-trial.json"),
		current: d.loaded.Settings,
		write: func(s *settings.Settings) error {
			disk := d.opts.Paths.Disk
			if disk == "" {
				rd, err := rootdisk.Find()
				if err != nil {
					return err
				}
				disk = rd.Path
			}
			return settings.WriteDevice(disk, s)
		},
		reboot: d.opts.Reboot,
		uptime: bootClock,
		bootID: kernelBootID,
		now:    time.Now,
	}
}

// bootClock is CLOCK_BOOTTIME: time since boot, suspend included.
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// kernelBootID is the kernel's random ID of this boot.
func kernelBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// start finishes what the trial record says at this start and returns the
// count of a trial this start runs (nil: none), for the caller to run.
func (k *trialKeeper) start() func(context.Context) {
	if k.tick == 0 {
		k.tick = time.Second
	}
	if k.delay == 0 {
		k.delay = restartDelay
	}
	t, err := settings.LoadTrial(k.path)
	if err != nil {
		k.log.Error("settings trial record unreadable; removed", "err", err)
		if err := settings.RemoveTrial(k.path); err != nil {
			k.log.Error("settings trial record", "err", err)
		}
		return nil
	}
	if t == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.trial = t
	onNew, onPrevious := settings.Same(k.current, t.New), settings.Same(k.current, t.Previous)
	switch {
	case (t.State == settings.TrialPending || t.State == settings.TrialReturning) && !onNew && onPrevious:
		// The new settings never reached the boot partition (a cut
		// before), or went back there (a cut after the write).
		if t.State == settings.TrialReturning {
			_ = k.set(settings.TrialReturned) // logged; the next start tries again
			return nil
		}
		k.log.Warn("the settings on trial were never written; nothing to try")
		k.drop()
		return nil
	case t.State == settings.TrialPending && onNew:
	case t.State == settings.TrialReturning && onNew:
		k.log.Warn("finishing the return to the previous network settings", "reason", t.Reason)
		go k.giveBack("")
		return nil
	case t.State == settings.TrialPending || t.State == settings.TrialReturning:
		k.log.Warn("the settings changed elsewhere since the trial began; trial dropped")
		k.drop()
		return nil
	default: // kept or returned: shown on the page
		return nil
	}
	if boot := k.bootID(); t.Boot != boot || boot == "" {
		t.Boot, t.Since = boot, config.Duration(k.uptime())
		if err := t.Save(k.path); err != nil {
			k.log.Error("settings trial: count not recorded", "err", err)
		}
	}
	k.deadline = time.Duration(t.Since) + time.Duration(t.Minutes)*time.Minute
	k.kept = make(chan struct{})
	k.log.Warn("new network settings on trial: keep them from the dashboard", "minutes", t.Minutes,
		"left", (k.deadline - k.uptime()).Round(time.Second))
	kept, deadline := k.kept, k.deadline
	return func(ctx context.Context) {
		for {
			// A trial kept or undone meanwhile is not given back
			// (giveBack looks under the lock).
			if k.uptime() >= deadline {
				k.giveBack("not kept within " + minutes(t.Minutes))
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-kept:
				return
			case <-time.After(k.tick):
			}
		}
	}
}

// drop removes the record.
func (k *trialKeeper) drop() {
	k.trial = nil
	if err := settings.RemoveTrial(k.path); err != nil {
		k.log.Error("settings trial record", "err", err)
	}
}

// set records a new state of the trial; when the record cannot be
// written the state stays as it was.
func (k *trialKeeper) set(state string) error {
	t := k.trial
	old, oldChanged := t.State, t.Changed
	t.State, t.Changed = state, k.now()
	if err := t.Save(k.path); err != nil {
		t.State, t.Changed = old, oldChanged
		k.log.Error("settings trial record", "state", state, "err", err)
		return err
	}
	return nil
}

// giveBack writes the previous settings back and restarts on them; an
// empty reason finishes a return already recorded.
func (k *trialKeeper) giveBack(reason string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.trial
	if t == nil || (t.State != settings.TrialPending && t.State != settings.TrialReturning) || k.restarting {
		return errors.New("no network settings are on trial")
	}
	if reason != "" {
		// Without the record a cut after the write would leave the
		// previous settings unexplained; they are written back anyway.
		t.Reason = reason
		_ = k.set(settings.TrialReturning)
	}
	k.log.Warn("returning to the previous network settings", "reason", t.Reason)
	if err := k.write(t.Previous); err != nil {
		// The next start tries again (the record says returning).
		k.log.Error("previous network settings not written back", "err", err)
		return fmt.Errorf("writing the previous settings back: %w", err)
	}
	_ = k.set(settings.TrialReturned) // else the next start records it
	k.deadline = 0
	k.restartSoon()
	return nil
}

// restartSoon restarts the device after k.delay; the caller holds k.mu.
func (k *trialKeeper) restartSoon() {
	k.restarting = true
	go func() {
		time.Sleep(k.delay)
		if err := k.reboot(); err != nil {
			k.log.Error("restart on the new settings failed", "err", err)
		}
	}()
}

// Form implements cloud.DeviceSettings.
func (k *trialKeeper) Form() cloud.SettingsForm {
	s := k.current
	f := cloud.SettingsForm{Hostname: s.Hostname, NTP: strings.Join(s.NTP, " "), TrialMinutes: settings.DefaultTrialMinutes}
	if in := wiredInterface(s); in != nil {
		f.Interface, f.Static = in.Name, in.Mode == settings.ModeStatic
		f.Addresses, f.DNS = strings.Join(in.Addresses, " "), strings.Join(in.DNS, " ")
		f.Gateway4, f.Gateway6 = in.Gateway4, in.Gateway6
	}
	for _, w := range wifiNetworks(s) {
		f.WiFi = append(f.WiFi, cloud.WiFiNetwork{SSID: w.SSID, Set: w.Passphrase != ""})
	}
	if len(f.WiFi) < settings.MaxWiFiNetworks {
		f.WiFi = append(f.WiFi, cloud.WiFiNetwork{}) // a new one
	}
	if u := s.Update; u != nil {
		f.UpdateServer, f.UpdateChannel, f.UpdateWindow, f.UpdateManual = u.URL, u.Channel, u.Window, u.Manual
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if t := k.trial; t != nil {
		switch {
		case t.State == settings.TrialPending && k.deadline > 0 && !k.restarting:
			f.Trial = &cloud.SettingsTrial{Left: max(0, k.deadline-k.uptime())}
		case t.State == settings.TrialKept:
			f.Last = "The last network change was kept" + when(t.Changed) + "."
		case t.State == settings.TrialReturned:
			f.Last = "The device returned to its previous network settings" + when(t.Changed) + ": " + t.Reason + "."
		}
	}
	return f
}

// when is " on <t>" for people, or nothing when the clock was not set.
func when(t time.Time) string {
	if t.Before(ClockFloor) {
		return ""
	}
	return " on " + t.UTC().Format("2006-01-02 15:04 UTC")
}

// wiredInterface is the interface the form edits: the first one of the
// settings (nil: none, DHCP on the first Ethernet interface).
func wiredInterface(s *settings.Settings) *settings.Interface {
	if s.Network == nil || len(s.Network.Interfaces) == 0 {
		return nil
	}
	return &s.Network.Interfaces[0]
}

// Apply implements cloud.DeviceSettings.
func (k *trialKeeper) Apply(f cloud.SettingsForm) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.restarting {
		return "", errors.New("the device is restarting on settings already saved")
	}
	if t := k.trial; t != nil && t.State == settings.TrialPending {
		return "", errors.New("keep or undo the network settings on trial first")
	}
	if t := k.trial; t != nil && t.State == settings.TrialReturning {
		return "", errors.New("the device is returning to its previous network settings; it restarts on them")
	}
	s, err := applyForm(k.current, f)
	if err != nil {
		return "", err
	}
	if settings.Same(s, k.current) {
		return "", errors.New("nothing changed")
	}
	trial := settings.NetworkChanged(k.current, s)
	if trial {
		if f.TrialMinutes < settings.MinTrialMinutes || f.TrialMinutes > settings.MaxTrialMinutes {
			return "", fmt.Errorf("minutes to keep a network change: %d, want %d to %d", f.TrialMinutes, settings.MinTrialMinutes, settings.MaxTrialMinutes)
		}
		t := &settings.Trial{State: settings.TrialPending, Previous: k.current, New: s, Minutes: f.TrialMinutes, Changed: k.now()}
		if err := t.Save(k.path); err != nil {
			return "", err
		}
		k.trial = t
	} else if k.trial != nil {
		k.drop() // the last trial's outcome is old news
	}
	if err := k.write(s); err != nil {
		if trial {
			k.drop()
		}
		k.log.Error("settings from the dashboard not written", "err", err)
		return "", fmt.Errorf("writing the settings: %w", err)
	}
	k.log.Info("settings from the dashboard written; restarting on them", "network_trial", trial)
	k.restartSoon()
	msg := "Saved. The device restarts on the new settings (about a minute)."
	if trial {
		msg += fmt.Sprintf(" The network settings are on trial: open the dashboard at %s within %s of the restart and keep them, or the device returns to the current ones.",
			localURLs(s), minutes(f.TrialMinutes))
	} else if s.Hostname != k.current.Hostname && s.Hostname != "" {
		msg += fmt.Sprintf(" On your network it is %s from then on.", localURLs(s))
	}
	return msg, nil
}

// minutes is n minutes in words.
func minutes(n int) string {
	if n == 1 {
		return "1 minute"
	}
	return fmt.Sprintf("%d minutes", n)
}

// localURLs are where the owner finds the dashboard on settings s.
func localURLs(s *settings.Settings) string {
	host := s.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	urls := []string{fmt.Sprintf("http://%s.local:%d/", host, localPort)}
	if in := wiredInterface(s); in != nil && in.Mode == settings.ModeStatic {
		for _, a := range in.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil {
				urls = append(urls, fmt.Sprintf("http://%s/", netip.AddrPortFrom(p.Addr(), localPort)))
			}
		}
	}
	return strings.Join(urls, " or ")
}

// applyForm returns s changed as f says, checked.
func applyForm(cur *settings.Settings, f cloud.SettingsForm) (*settings.Settings, error) {
	s := cur.Clone()
	s.Hostname = f.Hostname
	s.NTP = cloud.Words(f.NTP)

	// The edited interface keeps what the form does not show (routes,
	// search domains, MTU); the others stay as they are.
	var in settings.Interface
	if old := wiredInterface(cur); old != nil {
		in = *old
	}
	in.Name, in.DNS = f.Interface, cloud.Words(f.DNS)
	if f.Static {
		in.Mode, in.Addresses, in.Gateway4, in.Gateway6 = settings.ModeStatic, cloud.Words(f.Addresses), f.Gateway4, f.Gateway6
	} else {
		if in.Mode == settings.ModeStatic {
			in.Mode = settings.ModeDHCP
		}
		if f.Addresses != "" || f.Gateway4 != "" || f.Gateway6 != "" {
			return nil, errors.New("addresses and gateways are for a fixed address; the router gives them with DHCP")
		}
		in.Addresses, in.Gateway4, in.Gateway6, in.Routes = nil, "", "", nil
	}
	switch {
	case s.Network != nil && len(s.Network.Interfaces) > 0:
		s.Network.Interfaces[0] = in
	case f.Static || in.Name != "" || len(in.DNS) > 0:
		s.Network = &settings.Network{Interfaces: []settings.Interface{in}}
	}

	// Wi-Fi: the named rows in order; a blank passphrase keeps the one
	// stored for the same network.
	var nets []settings.WiFi
	for _, w := range f.WiFi {
		if w.SSID == "" {
			if w.Passphrase != "" {
				return nil, errors.New("a Wi-Fi passphrase needs the network's name")
			}
			continue
		}
		n := settings.WiFi{SSID: w.SSID, Passphrase: w.Passphrase}
		if n.Passphrase == "" {
			for _, old := range wifiNetworks(cur) {
				if old.SSID == n.SSID {
					n.Passphrase = old.Passphrase
				}
			}
		}
		nets = append(nets, n)
	}
	s.WiFi, s.WiFiNetworks = nil, nil
	if len(nets) > 0 {
		s.WiFi, s.WiFiNetworks = &nets[0], nets[1:]
		if len(s.WiFiNetworks) == 0 {
			s.WiFiNetworks = nil
		}
	}

	if f.UpdateChannel == settings.ChannelStable && (cur.Update == nil || cur.Update.Channel == "") {
		f.UpdateChannel = "" // the default, as it was
	}
	if s.Update != nil || f.UpdateChannel != "" || f.UpdateWindow != "" || f.UpdateManual {
		if s.Update == nil {
			s.Update = &settings.Update{}
		}
		s.Update.Channel, s.Update.Window, s.Update.Manual = f.UpdateChannel, f.UpdateWindow, f.UpdateManual
	}
	if err := profile.Check(s); err != nil {
		return nil, err
	}
	return s, nil
}

// wifiNetworks are s's Wi-Fi networks in order of preference.
func wifiNetworks(s *settings.Settings) []settings.WiFi {
	if s.WiFi == nil {
		return nil
	}
	return append([]settings.WiFi{*s.WiFi}, s.WiFiNetworks...)
}

// Keep implements cloud.DeviceSettings.
func (k *trialKeeper) Keep() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.trial
	if t == nil || t.State != settings.TrialPending || k.deadline == 0 || k.restarting {
		return errors.New("no network settings are on trial")
	}
	if err := k.set(settings.TrialKept); err != nil {
		return fmt.Errorf("your choice was not recorded (%w); try again", err)
	}
	close(k.kept)
	k.deadline = 0
	k.log.Info("the owner kept the network settings on trial")
	return nil
}

// Undo implements cloud.DeviceSettings.
func (k *trialKeeper) Undo() error { return k.giveBack("undone by the owner") }
