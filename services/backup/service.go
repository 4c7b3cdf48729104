// Package backup keeps encrypted, deduplicated backups of a node's data
// with restic (github.com/restic/restic), run as its own program: restic's
// repositories are restorable with stock restic on any computer, so the
// owner is never locked in. The repository password is the identity's
// backup password (identity.BackupPasswordFromMnemonic): the 24 words and
// the location give everything back.
//
// Service schedules the backups (daily by default, and on demand),
// applies the retention and prunes, checks the repository now and then
// reading back a sample, and keeps the last results for the dashboard.
// Locations are S3-compatible stores, restic REST servers, and friends'
// PC2 nodes (reached through Config.NodeURL). Seal and Open encrypt a
// location for the identity's public backup record.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
)

// Config configures a Service. Zero values are the defaults.
type Config struct {
	// Restic is the restic program (default "restic" on PATH).
	Restic string
	// PasswordFile holds the repository password. Required; it may not
	// exist yet (backups then wait for it: ErrNoPassword).
	PasswordFile string
	// StateDir holds the service's state file and restic's cache.
	// Required.
	StateDir string
	// Folders are what is backed up: a name for each absolute folder or
	// file. Required. A restore finds a folder by its name, wherever it
	// was on the device that made the backup.
	Folders map[string]string
	// Excludes are restic exclude patterns (absolute paths or globs).
	Excludes []string
	// Host names the device in snapshots (the DID), read at each backup.
	// Required.
	Host func() string
	// Default is the location used while the owner has set none.
	Default *Location
	// Interval between scheduled backups (default 24h); a failed backup
	// is retried after RetryAfter (default 1h) or Interval if shorter.
	Interval   time.Duration
	RetryAfter time.Duration
	// Keep is the retention (default 7 daily, 4 weekly, 12 monthly);
	// forget runs after each backup, prune every PruneInterval (default
	// 7 days).
	Keep          Retention
	PruneInterval time.Duration
	// CheckInterval is how often the repository is checked (default 7
	// days), reading back CheckSubset of its data (default "2%").
	CheckInterval time.Duration
	CheckSubset   string
	// StaleAfter: the status warns when the last good backup is older
	// (default 3 days).
	StaleAfter time.Duration
	// NodeURL returns a local restic REST endpoint for a friend node's
	// DID and a function that closes it; nil: friend nodes cannot be
	// reached from this device.
	NodeURL func(ctx context.Context, did string) (url string, done func(), err error)
	// HTTPClient asks a location whether it answers before restic runs
	// (default http.DefaultClient).
	HTTPClient *http.Client
	// GOGC and GOMEMLIMIT are restic's (for example "50" and "96MiB" on
	// small boards), and Connections its connections to the location
	// (0: restic's 5).
	GOGC, GOMEMLIMIT string
	Connections      int
	Logger           *slog.Logger
	Now              func() time.Time
}

// Operations a Service runs, one at a time.
const (
	OpBackup  = "backup"
	OpCheck   = "check"
	OpPrune   = "prune"
	OpRestore = "restore"
)

// ErrBusy: another operation is running.
var ErrBusy = errors.New("backup: another backup operation is running")

// ErrNoLocation: the owner has not chosen where backups go.
var ErrNoLocation = errors.New("backup: no backup location set")

// Results are what the last operations found: kept in the state file
// and shown in the status.
type Results struct {
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	Last        *Summary  `json:"last,omitempty"`
	LastCheck   time.Time `json:"last_check,omitzero"`
	CheckError  string    `json:"check_error,omitempty"`
	Size        uint64    `json:"size,omitempty"`
	Snapshots   int       `json:"snapshots,omitempty"`
}

// state is the service's state file.
type state struct {
	Location  *Location `json:"location,omitempty"`
	LastPrune time.Time `json:"last_prune,omitzero"`
	Results
}

// Status is the dashboard's view of the backups.
type Status struct {
	Engine   string    `json:"engine"`
	Location string    `json:"location,omitempty"` // without secrets
	Running  string    `json:"running,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Results
	NextRun time.Time `json:"next_run,omitzero"`
	// Warning is what the owner should act on ("" when all is well).
	Warning string `json:"warning,omitempty"`
	// NeedsWords: the device lacks the backup password (its identity was
	// provisioned as a key file); the owner types the words once.
	NeedsWords bool `json:"needs_words,omitempty"`
}

// Service keeps a node's backups.
type Service struct {
	cfg  Config
	log  *slog.Logger
	file string

	mu       sync.Mutex
	st       state
	running  string
	progress *Progress
	snaps    []Snapshot // the location's, as the last look found them
	cancel   context.CancelFunc

	op      chan struct{} // holds a token while an operation runs
	trigger chan struct{}
}

// New reads the service's state; Run schedules the backups.
func New(cfg Config) (*Service, error) {
	if cfg.PasswordFile == "" || cfg.StateDir == "" || len(cfg.Folders) == 0 || cfg.Host == nil {
		return nil, errors.New("backup: PasswordFile, StateDir, Folders and Host are required")
	}
	for name, dir := range cfg.Folders {
		if !filepath.IsAbs(dir) || name == "" || strings.ContainsAny(name, ",= ") {
			return nil, fmt.Errorf("backup: folder %q = %q: want a plain name and an absolute path", name, dir)
		}
	}
	if cfg.Default != nil {
		if err := cfg.Default.Check(); err != nil {
			return nil, err
		}
	}
	if cfg.Restic == "" {
		cfg.Restic = "restic"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Interval, 24*time.Hour)
	def(&cfg.RetryAfter, time.Hour)
	def(&cfg.PruneInterval, 7*24*time.Hour)
	def(&cfg.CheckInterval, 7*24*time.Hour)
	def(&cfg.StaleAfter, 3*24*time.Hour)
	if cfg.Keep == (Retention{}) {
		cfg.Keep = Retention{Daily: 7, Weekly: 4, Monthly: 12}
	}
	if cfg.CheckSubset == "" {
		cfg.CheckSubset = "2%"
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	// Pack files a killed restic left (restic's own temp files).
	if err := os.RemoveAll(filepath.Join(cfg.StateDir, "tmp")); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, file: filepath.Join(cfg.StateDir, "state.json"), trigger: make(chan struct{}, 1), op: make(chan struct{}, 1)}
	b, err := os.ReadFile(s.file)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("backup: %w", err)
	default:
		if err := json.Unmarshal(b, &s.st); err != nil {
			// Keep the broken file for a look; the schedule starts over.
			s.log.Error("backup state unreadable, starting afresh", "file", s.file, "err", err)
			_ = os.Rename(s.file, s.file+".broken")
			s.st = state{}
		}
	}
	return s, nil
}

// Location is the location in use (the owner's, else the default), if
// any.
func (s *Service) Location() (Location, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Location != nil {
		return *s.st.Location, true
	}
	if s.cfg.Default != nil {
		return *s.cfg.Default, true
	}
	return Location{}, false
}

// save writes the state; the caller holds mu.
func (s *Service) save() error {
	b, err := json.MarshalIndent(s.st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.file, b, 0o600); err != nil {
		return fmt.Errorf("backup: save state: %w", err)
	}
	return nil
}

func (s *Service) update(f func(*state)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
	if err := s.save(); err != nil {
		s.log.Error("backup state", "err", err)
	}
}

// resticFor returns restic for loc; done releases what reaching it took.
func (s *Service) resticFor(ctx context.Context, loc Location) (r *Restic, done func(), err error) {
	nodeURL, done := "", func() {}
	if loc.Kind == KindNode {
		if s.cfg.NodeURL == nil {
			return nil, nil, errors.New("backup: this device cannot reach friend nodes")
		}
		nodeURL, done, err = s.cfg.NodeURL(ctx, loc.Node)
		if err != nil {
			return nil, nil, fmt.Errorf("backup: reach %s: %w", loc.Node, err)
		}
	}
	repo, env, err := loc.repository(nodeURL)
	if err != nil {
		done()
		return nil, nil, err
	}
	return &Restic{Bin: s.cfg.Restic, PasswordFile: s.cfg.PasswordFile, CacheDir: filepath.Join(s.cfg.StateDir, "cache"),
		Repo: repo, Env: env, GOGC: s.cfg.GOGC, GOMEMLIMIT: s.cfg.GOMEMLIMIT, Connections: s.cfg.Connections, Log: s.log,
		// Pack files wait on disk, not in a tmpfs (the appliance's /tmp),
		// and what a killed restic left is in the state folder.
		TempDir: filepath.Join(s.cfg.StateDir, "tmp"), probeURL: loc.probeURL(repo), client: s.cfg.HTTPClient}, done, nil
}

// SetLocation checks that loc holds a repository this identity opens (or
// nothing yet: the first backup makes it) and makes it the location.
func (s *Service) SetLocation(ctx context.Context, loc Location) error {
	if err := loc.Check(); err != nil {
		return err
	}
	r, done, err := s.resticFor(ctx, loc)
	if err != nil {
		return err
	}
	defer done()
	if err := r.Open(ctx); err != nil && !errors.Is(err, ErrNoRepository) {
		return fmt.Errorf("backup location %s: %w", loc, err)
	}
	s.update(func(st *state) {
		st.Location = &loc
		st.LastError, st.CheckError, st.Size, st.Snapshots = "", "", 0, 0
		s.snaps = nil
	})
	s.log.Info("backup location set", "location", loc.String())
	s.Wake()
	return nil
}

// begin marks op running, or ErrBusy; with wait, it waits for the
// running operation to end (or ctx).
func (s *Service) begin(ctx context.Context, op string, wait bool) (context.Context, func(), error) {
	if wait {
		select {
		case s.op <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	} else {
		select {
		case s.op <- struct{}{}:
		default:
			return nil, nil, ErrBusy
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.running, s.progress, s.cancel = op, nil, cancel
	s.mu.Unlock()
	return ctx, func() {
		cancel()
		s.mu.Lock()
		s.running, s.progress, s.cancel = "", nil, nil
		s.mu.Unlock()
		<-s.op
	}, nil
}

func (s *Service) setProgress(p Progress) {
	s.mu.Lock()
	s.progress = &p
	s.mu.Unlock()
}

// Cancel stops the running operation, if any.
func (s *Service) Cancel() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

// BackupNow runs a backup now (with forget, and prune and check when
// due) and waits for it; ErrBusy while another operation runs.
func (s *Service) BackupNow(ctx context.Context) (sum Summary, err error) {
	err = s.do(ctx, OpBackup, func(ctx context.Context) error {
		sum, err = s.backup(ctx)
		return err
	})
	return sum, err
}

// do runs op (one at a time: ErrBusy, but a restore waits its turn)
// until it ends or ctx does.
func (s *Service) do(ctx context.Context, op string, f func(context.Context) error) error {
	opCtx, end, err := s.begin(ctx, op, op == OpRestore)
	if err != nil {
		return err
	}
	defer end()
	stop := context.AfterFunc(ctx, s.Cancel)
	defer stop()
	return f(opCtx)
}

// resticAt is resticFor of loc, or of the location in use when loc is nil.
func (s *Service) resticAt(ctx context.Context, loc *Location) (*Restic, func(), error) {
	if loc == nil {
		l, ok := s.Location()
		if !ok {
			return nil, nil, ErrNoLocation
		}
		loc = &l
	}
	return s.resticFor(ctx, *loc)
}

// Start runs a backup in the background (the dashboard's "Back up now").
func (s *Service) Start() error {
	ctx, end, err := s.begin(context.Background(), OpBackup, false)
	if err != nil {
		return err
	}
	go func() {
		defer end()
		_, _ = s.backup(ctx)
	}()
	return nil
}

// backup is one scheduled or requested run.
func (s *Service) backup(ctx context.Context) (Summary, error) {
	now := s.cfg.Now()
	loc, ok := s.Location()
	if !ok {
		return Summary{}, ErrNoLocation
	}
	sum, err := s.backupTo(ctx, loc)
	s.update(func(st *state) {
		st.LastAttempt = now
		if err != nil {
			st.LastError = err.Error()
			return
		}
		st.LastError, st.LastSuccess, st.Last = "", s.cfg.Now(), &sum
		s.snaps = nil // a new one
	})
	if err != nil {
		s.log.Error("backup failed", "location", loc.String(), "err", err)
		return sum, err
	}
	s.log.Info("backup done", "location", loc.String(), "snapshot", sum.Snapshot, "files", sum.TotalFiles,
		"new", sum.FilesNew, "changed", sum.FilesChanged, "added", sum.DataAddedPacked, "unreadable", len(sum.Unreadable))
	s.maintain(ctx, loc)
	return sum, nil
}

func (s *Service) backupTo(ctx context.Context, loc Location) (Summary, error) {
	r, done, err := s.resticFor(ctx, loc)
	if err != nil {
		return Summary{}, err
	}
	defer done()
	if err := r.Open(ctx); errors.Is(err, ErrNoRepository) {
		s.log.Info("backup: making the repository", "location", loc.String())
		if err := r.Init(ctx); err != nil {
			return Summary{}, fmt.Errorf("make the repository: %w", err)
		}
	} else if err != nil {
		return Summary{}, err
	}
	s.unlockStale(ctx, r)
	var paths, tags []string
	for _, name := range slices.Sorted(maps.Keys(s.cfg.Folders)) {
		dir := s.cfg.Folders[name]
		if _, err := os.Lstat(dir); err != nil {
			continue // not there (yet): nothing to back up
		}
		paths = append(paths, dir)
		tags = append(tags, folderTag(name, dir))
	}
	if len(paths) == 0 {
		return Summary{}, errors.New("backup: none of the folders exists")
	}
	return r.Backup(ctx, paths, s.cfg.Excludes, tags, s.cfg.Host(), s.setProgress)
}

// unlockStale removes the locks of a restic that died (a power cut, a
// device switched off in a prune): they would block the next operation
// for good. restic removes only stale ones: of this host's dead
// processes, or older than 30 minutes.
func (s *Service) unlockStale(ctx context.Context, r *Restic) {
	if err := r.Unlock(ctx); err != nil {
		s.log.Warn("backup: unlock", "err", err)
	}
}

// maintain forgets old snapshots, and prunes, checks and measures when
// due; its failures go to the status, not to the backup's result.
func (s *Service) maintain(ctx context.Context, loc Location) {
	r, done, err := s.resticFor(ctx, loc)
	if err != nil {
		return
	}
	defer done()
	s.mu.Lock()
	lastPrune, lastCheck := s.st.LastPrune, s.st.LastCheck
	s.mu.Unlock()
	now := s.cfg.Now()
	prune := now.Sub(lastPrune) >= s.cfg.PruneInterval
	s.setRunning(OpPrune)
	if err := r.Forget(ctx, s.cfg.Keep, s.cfg.Host(), prune); err != nil {
		s.log.Error("backup: forget", "err", err)
	} else if prune {
		s.update(func(st *state) { st.LastPrune = now })
	}
	if now.Sub(lastCheck) >= s.cfg.CheckInterval {
		s.setRunning(OpCheck)
		s.check(ctx, r)
	}
	size, err := r.Stats(ctx)
	snaps, serr := r.Snapshots(ctx)
	s.update(func(st *state) {
		if err == nil {
			st.Size = size
		}
		if serr == nil {
			st.Snapshots = len(snaps)
		}
	})
	if serr == nil {
		s.mu.Lock()
		s.snaps = snaps
		s.mu.Unlock()
	}
}

func (s *Service) setRunning(op string) {
	s.mu.Lock()
	s.running, s.progress = op, nil
	s.mu.Unlock()
}

func (s *Service) check(ctx context.Context, r *Restic) error {
	err := r.Check(ctx, s.cfg.CheckSubset)
	s.update(func(st *state) {
		st.LastCheck = s.cfg.Now()
		st.CheckError = ""
		if err != nil {
			st.CheckError = err.Error()
		}
	})
	if err != nil {
		s.log.Error("backup check failed", "err", err)
	}
	return err
}

// CheckNow checks the repository now, reading back CheckSubset.
func (s *Service) CheckNow(ctx context.Context) error {
	return s.do(ctx, OpCheck, func(ctx context.Context) error {
		r, done, err := s.resticAt(ctx, nil)
		if err != nil {
			return err
		}
		defer done()
		s.unlockStale(ctx, r)
		return s.check(ctx, r)
	})
}

// Status is the dashboard's view.
func (s *Service) Status() Status {
	loc, ok := s.Location()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Engine: "restic", Running: s.running, Progress: s.progress, Results: s.st.Results}
	now := s.cfg.Now()
	st.NeedsWords = s.passwordMissing()
	if ok {
		st.Location = loc.String()
		st.NextRun = s.nextRun(now)
	}
	switch {
	case !ok:
		st.Warning = "Backups are off: choose where they go."
	case st.NeedsWords:
		st.Warning = "Backups wait for the 24 words: this device was given a key file, not the words."
	case st.LastSuccess.IsZero() && st.LastError != "":
		st.Warning = "No backup has succeeded yet: " + st.LastError
	case !st.LastSuccess.IsZero() && now.Sub(st.LastSuccess) > s.cfg.StaleAfter:
		st.Warning = fmt.Sprintf("The last good backup is %d days old.", int(now.Sub(st.LastSuccess).Hours()/24))
		if st.LastError != "" {
			st.Warning += " The last attempt failed: " + st.LastError
		}
	case st.CheckError != "":
		st.Warning = "The last check of the backups failed: " + st.CheckError
	}
	return st
}

func (s *Service) passwordMissing() bool {
	_, err := os.Stat(s.cfg.PasswordFile)
	return errors.Is(err, os.ErrNotExist)
}

// nextRun is when the schedule runs the next backup; the caller holds mu.
func (s *Service) nextRun(now time.Time) time.Time {
	if s.st.LastAttempt.IsZero() {
		return now
	}
	if s.st.LastError != "" {
		return s.st.LastAttempt.Add(min(s.cfg.RetryAfter, s.cfg.Interval))
	}
	return s.st.LastAttempt.Add(s.cfg.Interval)
}

// Wake makes the schedule look again now (a location or the password
// arrived).
func (s *Service) Wake() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run runs the schedule until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	for {
		wait := time.Hour
		if _, ok := s.Location(); ok && !s.passwordMissing() {
			s.mu.Lock()
			wait = s.nextRun(s.cfg.Now()).Sub(s.cfg.Now())
			s.mu.Unlock()
		}
		if wait <= 0 {
			err := s.do(ctx, OpBackup, func(ctx context.Context) error {
				_, err := s.backup(ctx)
				return err
			})
			if !errors.Is(err, ErrBusy) {
				continue
			}
			wait = time.Minute // an operation is running: look again soon
		}
		t := time.NewTimer(min(wait, time.Hour))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.trigger:
		case <-t.C:
		}
		t.Stop()
	}
}

// Snapshots lists the location's snapshots, oldest first.
// The list is kept from the last backup (or the last time it was asked)
// until the next one: on a Pi each restic run costs half a second of
// CPU and 70 MB.
func (s *Service) Snapshots(ctx context.Context) ([]Snapshot, error) {
	s.mu.Lock()
	snaps := s.snaps
	s.mu.Unlock()
	if snaps != nil {
		return snaps, nil
	}
	r, done, err := s.resticAt(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer done()
	if snaps, err = r.Snapshots(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.snaps = snaps
	s.mu.Unlock()
	return snaps, nil
}

// folderTag is the snapshot tag that records where folder name was.
func folderTag(name, dir string) string { return "pc2:" + name + "=" + dir }

// FolderPath is where folder name was on the device that made snap.
func FolderPath(snap Snapshot, name string) (string, bool) {
	for _, t := range snap.Tags {
		if rest, ok := strings.CutPrefix(t, "pc2:"+name+"="); ok {
			return rest, true
		}
	}
	return "", false
}

// Restore restores folder name of snapshot ("latest", or an ID or its
// prefix) into target, an empty or missing folder it fills. loc nil: the
// location in use. includes, if any, restrict it to those paths, relative
// to the folder ("photos/2024", "notes.txt").
func (s *Service) Restore(ctx context.Context, loc *Location, snapshot, name, target string, includes []string) error {
	return s.do(ctx, OpRestore, func(ctx context.Context) error {
		r, done, err := s.resticAt(ctx, loc)
		if err != nil {
			return err
		}
		defer done()
		snaps, err := r.Snapshots(ctx)
		if err != nil {
			return err
		}
		// A lost device's restic may have died holding the lock.
		s.unlockStale(ctx, r)
		snap, err := pick(snaps, snapshot)
		if err != nil {
			return err
		}
		dir, ok := FolderPath(snap, name)
		if !ok {
			return fmt.Errorf("backup: snapshot %s holds no folder %q", snap.Short, name)
		}
		var abs []string
		for _, inc := range includes {
			inc = filepath.Clean("/" + inc)
			if inc == "/" {
				abs = nil
				break
			}
			abs = append(abs, dir+inc)
		}
		s.log.Info("restoring", "snapshot", snap.Short, "folder", name, "target", target, "paths", len(abs))
		if err := r.Restore(ctx, snap.ID, dir, target, abs, s.setProgress); err != nil {
			return fmt.Errorf("restore %s of snapshot %s: %w", name, snap.Short, err)
		}
		return nil
	})
}

// pick finds snapshot id ("latest": the newest) among snaps.
func pick(snaps []Snapshot, id string) (Snapshot, error) {
	if len(snaps) == 0 {
		return Snapshot{}, errors.New("backup: the repository holds no snapshot")
	}
	if id == "" || id == "latest" {
		return slices.MaxFunc(snaps, func(a, b Snapshot) int { return a.Time.Compare(b.Time) }), nil
	}
	var found []Snapshot
	for _, sn := range snaps {
		if strings.HasPrefix(sn.ID, id) {
			found = append(found, sn)
		}
	}
	switch len(found) {
	case 0:
		return Snapshot{}, fmt.Errorf("backup: no snapshot %q", id)
	case 1:
		return found[0], nil
	}
	return Snapshot{}, fmt.Errorf("backup: %q names %d snapshots", id, len(found))
}
