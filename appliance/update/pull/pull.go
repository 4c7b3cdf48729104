// Package pull is the device's periodic check of an update server: every
// interval, inside a daily window, it fetches the manifest of its board and
// channel and has the updater install a newer release.
package pull

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
)

// Config is where and when a device looks for updates by itself.
type Config struct {
	// URL is the update server's base: a release for channel C and board
	// B is the bundle folder <URL>/<C>/<B>/ (manifest.json,
	// manifest.json.sig and the artifacts), as `pc2 release` writes it.
	URL     string
	Channel string // manifest.Stable (default) or manifest.Beta
	// Interval between checks (default 6h); the first check comes one
	// interval after the start.
	Interval time.Duration
	// Window, when set, limits checks and installs to a daily time span
	// in UTC (it may wrap past midnight).
	Window Window
	// Client fetches (default: a client with a 30 s header timeout).
	Client *http.Client
	// Installed is called after an update was written (the device
	// reboots into its test boot).
	Installed func(*manifest.Manifest)
	Logger    *slog.Logger
	Now       func() time.Time // default time.Now
}

// DefaultInterval is Config.Interval's default.
const DefaultInterval = 6 * time.Hour

// Window is a daily span of time, in minutes after midnight UTC; the
// zero value is the whole day. The device's settings write it as
// "HH:MM-HH:MM" (settings.ParseWindow).
type Window struct{ From, To int }

// String writes w the way the settings do.
func (w Window) String() string {
	if w == (Window{}) {
		return ""
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.From/60, w.From%60, w.To/60, w.To%60)
}

// Next returns t when t is inside the window, else the window's next
// start.
func (w Window) Next(t time.Time) time.Time {
	if w == (Window{}) {
		return t
	}
	t = t.UTC()
	m := t.Hour()*60 + t.Minute()
	in := w.From < w.To && m >= w.From && m < w.To || w.From > w.To && (m >= w.From || m < w.To)
	if in {
		return t
	}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	start := day.Add(time.Duration(w.From) * time.Minute)
	if !start.After(t) {
		start = start.AddDate(0, 0, 1)
	}
	return start
}

// Run checks the update server every interval (within the window) and
// has u install a newer release of the device's board on its channel,
// until ctx ends or an update was installed. A release that was refused or
// rolled back here is not tried again; a newer one is.
func Run(ctx context.Context, u *update.Updater, cfg Config) {
	if cfg.Channel == "" {
		cfg.Channel = manifest.Stable
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second}}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &puller{u: u, cfg: cfg, log: cfg.Logger}
	p.base = strings.TrimSuffix(cfg.URL, "/") + "/" + url.PathEscape(cfg.Channel) + "/" + url.PathEscape(u.Release().Board) + "/"
	p.status.URL = p.base
	u.SetPullStatus(p.status)
	for {
		next := cfg.Window.Next(cfg.Now().Add(cfg.Interval))
		p.status.NextCheck = next
		u.SetPullStatus(p.status)
		t := time.NewTimer(next.Sub(cfg.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m, err := p.once(ctx)
		if ctx.Err() != nil {
			// Stopping: a check cut short is no check.
			return
		}
		p.status.LastCheck = cfg.Now()
		p.status.CheckErr = ""
		if err != nil {
			p.status.CheckErr = err.Error()
		}
		u.SetPullStatus(p.status)
		if err != nil {
			p.log.Warn("update check failed", "url", p.base, "err", err)
			continue
		}
		if m != nil && cfg.Installed != nil {
			cfg.Installed(m)
			return
		}
	}
}

// puller is one Run.
type puller struct {
	u      *update.Updater
	cfg    Config
	log    *slog.Logger
	base   string // the bundle folder's URL, with a final slash
	status update.PullStatus
}

// once checks the server once and installs what it finds; it returns the
// installed manifest, or nil when there was nothing to install.
func (p *puller) once(ctx context.Context) (*manifest.Manifest, error) {
	get := func(ctx context.Context, name string, limit int64) (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+url.PathEscape(name), nil)
		if err != nil {
			return nil, err
		}
		resp, err := p.cfg.Client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
		}
		if limit > 0 {
			return struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, limit), resp.Body}, nil
		}
		return resp.Body, nil
	}
	small := func(name string) ([]byte, error) {
		rc, err := get(ctx, name, manifest.MaxSize+1)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err == nil && len(b) > manifest.MaxSize {
			err = fmt.Errorf("%w: %s is larger than %d bytes", manifest.ErrMalformed, name, manifest.MaxSize)
		}
		return b, err
	}
	raw, err := small(manifest.ManifestFile)
	if err != nil {
		return nil, err
	}
	sig, err := small(manifest.SignatureFile)
	if err != nil {
		return nil, err
	}
	running := p.u.Release().Version
	v := manifest.UnverifiedVersion(raw)
	if c, err := manifest.CompareVersions(v, running); err != nil || c <= 0 {
		if err != nil {
			return nil, fmt.Errorf("the server's manifest: %w", err)
		}
		p.log.Debug("update check: up to date", "server", v, "running", running)
		return nil, nil
	}
	if last := p.u.Status(false).Last; last != nil && last.Version == v && (last.Outcome == update.Refused || last.Outcome == update.RolledBack) {
		// Tried and failed here; wait for a newer release.
		return nil, fmt.Errorf("release %s was %s here (%s); waiting for a newer one", v, last.Outcome, last.Reason)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", manifest.ErrMalformed, err)
	}
	fetch := func(ctx context.Context, name string) (io.ReadCloser, error) {
		// Install verified the manifest before it asks for an artifact.
		a, ok := m.Artifacts[name]
		if !ok {
			return nil, fmt.Errorf("no %s artifact", name)
		}
		return get(ctx, a.File, 0)
	}
	p.log.Info("update available", "version", v, "running", running, "url", p.base)
	return p.u.Install(ctx, "pull from "+p.base, raw, sig, fetch)
}
