// Package pull is the device's periodic check of an update server: every
// interval, inside a daily window, it fetches the manifest of its board and
// channel and has the updater install a newer release (or, set to manual,
// shows it for the owner to install from the dashboard; the owner can also
// check at once).
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
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
	// IdleTimeout ends a fetch whose body sends nothing for that long
	// (default 1 min): a server that stalls mid-artifact must not hold
	// the updater's one install until the device restarts.
	IdleTimeout time.Duration
	// Manual: the periodic checks only show what they found; the owner
	// installs it (Puller.Install).
	Manual bool
	// Installed is called after an update was written (the device
	// reboots into its test boot).
	Installed func(*manifest.Manifest)
	Logger    *slog.Logger
	Now       func() time.Time // default time.Now
}

// Defaults of Config.
const (
	DefaultInterval    = 6 * time.Hour
	DefaultIdleTimeout = time.Minute
)

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
// until ctx ends or an update was installed: New(u, cfg).Run(ctx).
func Run(ctx context.Context, u *update.Updater, cfg Config) { New(u, cfg).Run(ctx) }

// Puller is a device's link to its update server: Run looks for updates
// every interval, Check looks at once, Install installs what a check
// found. A release that was refused or rolled back here is not tried
// again; a newer one is.
type Puller struct {
	u    *update.Updater
	cfg  Config
	log  *slog.Logger
	base string // the bundle folder's URL, with a final slash

	mu     sync.Mutex
	status update.PullStatus
	found  *found // a newer release a check found, not installed yet
}

// found is a release a check found and verified.
type found struct {
	raw, sig []byte
	m        manifest.Manifest
}

// New returns the Puller of u with cfg's defaults filled in.
func New(u *update.Updater, cfg Config) *Puller {
	if cfg.Channel == "" {
		cfg.Channel = manifest.Stable
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second}}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Puller{u: u, cfg: cfg, log: cfg.Logger}
	p.base = strings.TrimSuffix(cfg.URL, "/") + "/" + url.PathEscape(cfg.Channel) + "/" + url.PathEscape(u.Release().Board) + "/"
	p.status.URL = p.base
	u.SetPullStatus(p.status)
	return p
}

// setStatus changes the pull status under the lock and publishes it.
func (p *Puller) setStatus(f func(*update.PullStatus)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.status)
	p.u.SetPullStatus(p.status)
}

// Run checks every interval within the window; it installs what it
// finds unless the config is Manual. It returns when ctx ends or after
// an install.
func (p *Puller) Run(ctx context.Context) {
	for {
		next := p.cfg.Window.Next(p.cfg.Now().Add(p.cfg.Interval))
		p.setStatus(func(s *update.PullStatus) { s.NextCheck = next })
		t := time.NewTimer(next.Sub(p.cfg.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		v, err := p.Check(ctx)
		if ctx.Err() != nil {
			// Stopping: a check cut short is no check.
			return
		}
		if err != nil {
			p.log.Warn("update check failed", "url", p.base, "err", err)
			continue
		}
		if v == "" || p.cfg.Manual {
			continue
		}
		if m, err := p.Install(ctx); err != nil {
			p.log.Warn("update failed", "version", v, "err", err)
		} else if m != nil {
			return
		}
	}
}

// Check looks for a newer release on the server at once and returns its
// version ("" when the device is up to date); the release's manifest is
// verified (a refused one is recorded as such) and kept for Install. The
// status shows the check and what it found.
func (p *Puller) Check(ctx context.Context) (string, error) {
	f, err := p.check(ctx)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	p.mu.Lock()
	p.found = f
	p.mu.Unlock()
	p.setStatus(func(s *update.PullStatus) {
		s.LastCheck, s.CheckErr, s.Available = p.cfg.Now(), "", ""
		if err != nil {
			s.CheckErr = err.Error()
		}
		if f != nil {
			s.Available = f.m.Version
		}
	})
	if f == nil {
		return "", err
	}
	return f.m.Version, nil
}

// Install installs the release the last check found, then calls the
// config's Installed. It returns the installed manifest.
func (p *Puller) Install(ctx context.Context) (*manifest.Manifest, error) {
	p.mu.Lock()
	f := p.found
	p.mu.Unlock()
	if f == nil {
		return nil, errors.New("pull: no newer release found; check for updates first")
	}
	fetch := func(ctx context.Context, name string) (io.ReadCloser, error) {
		// Install verified the manifest before it asks for an artifact.
		a, ok := f.m.Artifacts[name]
		if !ok {
			return nil, fmt.Errorf("no %s artifact", name)
		}
		return p.get(ctx, a.File, 0)
	}
	p.log.Info("installing an update from the server", "version", f.m.Version, "url", p.base)
	m, err := p.u.Install(ctx, "pull from "+p.base, f.raw, f.sig, fetch)
	if errors.Is(err, update.ErrBusy) {
		return nil, err
	}
	p.mu.Lock()
	if p.found == f {
		p.found = nil
	}
	p.mu.Unlock()
	p.setStatus(func(s *update.PullStatus) { s.Available = "" })
	if err != nil {
		return nil, err
	}
	if p.cfg.Installed != nil {
		p.cfg.Installed(m)
	}
	return m, nil
}

// get fetches name from the bundle folder, at most limit bytes (0: all);
// the fetch ends with an error when the body stalls for the config's
// IdleTimeout.
func (p *Puller) get(ctx context.Context, name string, limit int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+url.PathEscape(name), nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	idle := p.cfg.IdleTimeout
	stalled := fmt.Errorf("GET %s: nothing received for %v", req.URL, idle)
	b := &idleBody{rc: resp.Body, ctx: ctx, idle: idle, cancel: cancel,
		timer: time.AfterFunc(idle, func() { cancel(stalled) })}
	if limit > 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(b, limit), b}, nil
	}
	return b, nil
}

// idleBody is a response body whose request is cancelled when no byte
// arrives for idle.
type idleBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelCauseFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// check fetches and verifies the server's manifest; nil when the device
// is up to date.
func (p *Puller) check(ctx context.Context) (*found, error) {
	small := func(name string) ([]byte, error) {
		rc, err := p.get(ctx, name, manifest.MaxSize+1)
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
	plan, err := p.u.Check(raw, sig)
	if err != nil {
		p.u.Refuse(raw, "pull from "+p.base, err)
		return nil, err
	}
	p.log.Info("update available", "version", v, "running", running, "url", p.base)
	return &found{raw: raw, sig: sig, m: *plan.Manifest}, nil
}
