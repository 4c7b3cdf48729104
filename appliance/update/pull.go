package update

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// PullConfig is where and when a device looks for updates by itself.
type PullConfig struct {
	// URL is the update server's base: a release for channel C and board
	// B is the bundle folder <URL>/<C>/<B>/ (manifest.json,
	// manifest.json.sig and the artifacts), as `pc2 release` writes it.
	URL     string
	Channel string // Stable (default) or Beta
	// Interval between checks (default 6h); the first check comes one
	// interval after the start.
	Interval time.Duration
	// Window, when set, limits checks and installs to a daily time span
	// in UTC ("02:00-05:00"; it may wrap past midnight).
	Window Window
	// Client fetches (default: a client with a 30 s header timeout).
	Client *http.Client
	// Installed is called after an update was written (the device
	// reboots into its test boot).
	Installed func(*Manifest)
}

// DefaultInterval is PullConfig.Interval's default.
const DefaultInterval = 6 * time.Hour

// Window is a daily span of time, in minutes after midnight UTC; the
// zero value is the whole day.
type Window struct{ From, To int }

// ParseWindow reads "HH:MM-HH:MM" ("" is the whole day).
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	var w Window
	var err error
	if ok {
		if w.From, err = parseClock(a); err == nil {
			w.To, err = parseClock(b)
		}
	}
	if !ok || err != nil || w.From == w.To {
		return Window{}, fmt.Errorf("update window %q: want HH:MM-HH:MM (UTC), two different times", s)
	}
	return w, nil
}

func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

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

// Pull checks the update server every interval (within the window) and
// installs a newer release of the device's board on its channel, until
// ctx ends. A release that was refused or rolled back here is not tried
// again; a newer one is.
func (u *Updater) Pull(ctx context.Context, cfg PullConfig) {
	if cfg.Channel == "" {
		cfg.Channel = Stable
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second}}
	}
	base := strings.TrimSuffix(cfg.URL, "/") + "/" + url.PathEscape(cfg.Channel) + "/" + url.PathEscape(u.opts.Release.Board) + "/"
	u.mu.Lock()
	u.status.URL = base
	u.mu.Unlock()
	for {
		next := cfg.Window.Next(u.now().Add(cfg.Interval))
		u.mu.Lock()
		u.status.NextCheck = next
		u.mu.Unlock()
		t := time.NewTimer(next.Sub(u.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m, err := u.pullOnce(ctx, cfg, base)
		if ctx.Err() != nil {
			// Stopping: a check cut short is no check.
			return
		}
		u.mu.Lock()
		u.status.LastCheck = u.now()
		u.status.CheckErr = ""
		if err != nil {
			u.status.CheckErr = err.Error()
		}
		u.mu.Unlock()
		if err != nil {
			u.log.Warn("update check failed", "url", base, "err", err)
			continue
		}
		if m != nil && cfg.Installed != nil {
			cfg.Installed(m)
			return
		}
	}
}

// pullOnce checks base once and installs what it finds; it returns the
// installed manifest, or nil when there was nothing to install.
func (u *Updater) pullOnce(ctx context.Context, cfg PullConfig, base string) (*Manifest, error) {
	get := func(ctx context.Context, name string, limit int64) (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+url.PathEscape(name), nil)
		if err != nil {
			return nil, err
		}
		resp, err := cfg.Client.Do(req)
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
		rc, err := get(ctx, name, maxManifest+1)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err == nil && len(b) > maxManifest {
			err = fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformed, name, maxManifest)
		}
		return b, err
	}
	manifest, err := small(ManifestFile)
	if err != nil {
		return nil, err
	}
	sig, err := small(SignatureFile)
	if err != nil {
		return nil, err
	}
	v := versionOf(manifest)
	if c, err := CompareVersions(v, u.opts.Release.Version); err != nil || c <= 0 {
		if err != nil {
			return nil, fmt.Errorf("the server's manifest: %w", err)
		}
		u.log.Debug("update check: up to date", "server", v, "running", u.opts.Release.Version)
		return nil, nil
	}
	if last := u.Status(false).Last; last != nil && last.Version == v && (last.Outcome == Refused || last.Outcome == RolledBack) {
		// Tried and failed here; wait for a newer release.
		return nil, fmt.Errorf("release %s was %s here (%s); waiting for a newer one", v, last.Outcome, last.Reason)
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	fetch := func(ctx context.Context, name string) (io.ReadCloser, error) {
		// Install verified the manifest before it asks for an artifact.
		a, ok := m.Artifacts[name]
		if !ok {
			return nil, fmt.Errorf("no %s artifact", name)
		}
		return get(ctx, a.File, 0)
	}
	u.log.Info("update available", "version", v, "running", u.opts.Release.Version, "url", base)
	return u.Install(ctx, "pull from "+base, manifest, sig, fetch)
}
