package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/appliance/update/pull"
	"github.com/pc2/pc2/appliance/update/updateapi"
	"github.com/pc2/pc2/services/cloud"
)

// startUpdates sets up the updater (nil when the image does not describe
// its release, e.g. a development run on a host: updates are then off
// and the admin API says why), finishes the bookkeeping of an update
// that was being tested, and starts the test boot's health check or the
// periodic pull.
func (d *Device) startUpdates(ctx context.Context, s *settings.Settings, goRun func(func())) {
	info, err := manifest.ReadRelease(d.opts.ReleaseFile)
	if err != nil {
		d.updatesOff = err.Error()
		d.log.Info("over-the-air updates off", "reason", err)
		return
	}
	var keys []byte
	if keys, err = os.ReadFile(d.opts.KeysFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("release keys unreadable: no update will be accepted", "err", err)
	}
	ids, err := manifest.ParseKeys(keys)
	if err != nil {
		d.log.Warn("release keys unreadable: no update will be accepted", "err", err)
	}
	var us settings.Update
	if s.Update != nil {
		us = *s.Update
	}
	u, err := update.New(update.Options{Dir: filepath.Join(profile.DataDir(d.opts.PermDir), "update"), Disk: d.opts.UpdateDisk,
		Release: info, Keys: ids, HealthTimeout: us.HealthTimeout.Or(update.DefaultHealthTimeout), Logger: d.log})
	if err != nil {
		d.updatesOff = err.Error()
		d.log.Warn("over-the-air updates off", "err", err)
		return
	}
	d.updates = u
	state, p, err := u.Resume()
	if err != nil {
		d.log.Error("update: resuming", "err", err)
	}
	switch state {
	case update.TestBoot:
		if p.Failure != "" {
			d.log.Warn("update: this test boot already failed; returning to the old version", "reason", p.Failure)
			d.rebootSoon()
			return
		}
		goRun(func() { d.testBoot(ctx, u, p) })
		return // no pulling while on test
	case update.Returned:
		d.log.Warn("update: rolled back", "version", p.Version, "reason", u.Status(false).Last.Reason)
	case update.Committed:
		d.log.Info("update: installed", "version", p.Version)
	}
	if us.URL != "" {
		cfg := pullConfig(us)
		cfg.Installed, cfg.Logger = d.installed, d.log
		p := pull.New(u, cfg)
		d.puller.Store(p)
		goRun(func() {
			// The update window is wall-clock time.
			if d.waitForClock(ctx, "checking for updates") {
				p.Run(ctx)
			}
		})
	}
}

// pullConfig is the pull loop's config for the update settings.
func pullConfig(us settings.Update) pull.Config {
	w, _ := settings.ParseWindow(us.Window) // checked with the settings
	return pull.Config{URL: us.URL, Channel: us.Channel, Interval: time.Duration(us.Interval),
		Window: pull.Window{From: w.From, To: w.To}, Manual: us.Manual}
}

// installed reboots into the test boot of an update just written.
func (d *Device) installed(m *manifest.Manifest) {
	d.log.Warn("update written; rebooting into its test boot", "version", m.Version)
	d.rebootSoon()
}

// rebootSoon reboots after the current answers went out.
func (d *Device) rebootSoon() {
	go func() {
		time.Sleep(500 * time.Millisecond)
		if err := d.opts.Reboot(); err != nil {
			d.log.Error("reboot failed", "err", err)
		}
	}()
}

// testBoot is the device's half of the health gate: it commits the
// update once the services are healthy for a few seconds in a row, or
// records why they are not and reboots into the old version before the
// init's deadline (update.BeginTestBoot) would.
func (d *Device) testBoot(ctx context.Context, u *update.Updater, p *update.Pending) {
	limit := time.Duration(p.HealthTimeout)
	limit -= min(limit/4, 15*time.Second)
	deadline := time.Now().Add(limit)
	d.log.Info("update: test boot; checking health", "version", p.Version, "within", limit)
	const needOK = 3
	ok := 0
	var last error
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ok < needOK && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if last = d.health(ctx); last == nil {
			ok++
		} else {
			ok = 0
		}
	}
	if ok >= needOK {
		if err := u.Commit(); err != nil {
			// The init's deadline returns the device to the old version.
			d.log.Error("update: commit failed", "err", err)
			return
		}
		d.log.Info("update: healthy; committed", "version", p.Version)
		return
	}
	reason := fmt.Sprintf("the health check did not pass within %s: %v", limit.Round(time.Second), last)
	if err := u.Fail(reason); err != nil {
		d.log.Error("update: recording the failure", "err", err)
	}
	d.rebootSoon()
}

// health reports what keeps the device from being healthy: its profile's
// services run and answer, the identity is loaded, and the tunnel is
// attached when the node is reached through relays.
func (d *Device) health(ctx context.Context) error {
	if d.loaded.Profile == profile.Supernode {
		if d.snAddrs.Load() == nil {
			return errors.New("the supernode is not listening yet")
		}
		return d.probe(ctx, "/api/status")
	}
	n := d.node.Load()
	if n == nil {
		return errors.New("the personal node has not started")
	}
	st := n.Status()
	switch st.State {
	case "waiting": // no identity yet: the setup wizard is what runs
	case "online":
		if st.Mode != "relayed" && st.Mode != "direct" {
			return fmt.Errorf("the node is not reachable (mode %s)", st.Mode)
		}
	default:
		detail := st.Detail
		if st.LastError != "" {
			detail += " " + st.LastError
		}
		return fmt.Errorf("the personal node is %s: %s", st.State, detail)
	}
	return d.probe(ctx, "/healthz")
}

// probe asks the device's own port 4200 for path.
func (d *Device) probe(ctx context.Context, path string) error {
	addr := "127.0.0.1" + personal.DefaultListen
	if d.opts.Listener != nil {
		addr = d.opts.Listener.Addr().String()
		if h, p, err := net.SplitHostPort(addr); err == nil && (h == "::" || h == "0.0.0.0" || h == "") {
			addr = net.JoinHostPort("127.0.0.1", p)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("port 4200 does not answer: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("port 4200 answers %s for %s", resp.Status, path)
	}
	return nil
}

// updateRoutes adds the update endpoints to the admin API.
func (d *Device) updateRoutes(mux *http.ServeMux) {
	if d.updates != nil {
		updateapi.Routes(mux, d.updates, d.admin, d.installed)
		return
	}
	off := d.admin(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "over-the-air updates are off on this device: "+d.updatesOff, http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/api/update", off)
	mux.HandleFunc("/api/update/", off)
}

// dashboardUpdates is the dashboard's view of the updates.
func (d *Device) dashboardUpdates() cloud.UpdateStatus {
	if d.updates == nil {
		return cloud.UpdateStatus{Problem: "updates are off: " + d.updatesOff}
	}
	st := d.updates.Status(false)
	var out cloud.UpdateStatus
	if l := st.Last; l != nil {
		out.Last = l.Outcome + " " + l.Version
		if l.From != "" {
			out.Last += " (from " + l.From + ")"
		}
		if l.Reason != "" {
			out.Last += ": " + l.Reason
		}
		out.When = l.Time
	}
	if st.Testing != nil {
		out.Last = "testing " + st.Testing.Version
	}
	out.NextCheck, out.Source, out.Problem, out.Available = st.NextCheck, st.URL, st.CheckErr, st.Available
	out.CanCheck = d.puller.Load() != nil && st.Testing == nil
	if out.Installing = st.Installing; st.Progress != nil {
		out.Progress = st.Progress.Step
		if st.Progress.Total > 0 {
			out.Progress += fmt.Sprintf(": %.1f of %.1f MB", float64(st.Progress.Done)/1e6, float64(st.Progress.Total)/1e6)
		}
	}
	return out
}

// dashboardActions are the dashboard's update buttons.
type dashboardActions struct{ d *Device }

func (a dashboardActions) Check(ctx context.Context) (string, error) {
	p := a.d.puller.Load()
	if p == nil {
		return "", errors.New("no update server in the settings")
	}
	return p.Check(ctx)
}

// Install starts the install in the background: the dashboard follows its
// progress, and the device reboots into its test boot when it is written
// (the pull config's Installed).
func (a dashboardActions) Install() error {
	p := a.d.puller.Load()
	if p == nil {
		return errors.New("no update server in the settings")
	}
	st := a.d.updates.Status(false)
	switch {
	case st.Testing != nil:
		return fmt.Errorf("version %s is being tested", st.Testing.Version)
	case st.Installing != "":
		return fmt.Errorf("version %s is being installed", st.Installing)
	case st.Available == "":
		return errors.New("no newer version found; check for updates first")
	}
	go func() {
		if _, err := p.Install(context.Background()); err != nil {
			a.d.log.Warn("update from the dashboard failed", "version", st.Available, "err", err)
		}
	}()
	return nil
}
