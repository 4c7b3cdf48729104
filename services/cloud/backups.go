package cloud

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pc2/pc2/services/backup"
)

// Backups is what the cloud needs of the node's backups
// (services/backup.Service, and the identity's backup record).
type Backups interface {
	Status() backup.Status
	Location() (backup.Location, bool)
	SetLocation(ctx context.Context, loc backup.Location) error
	Start() error
	Snapshots(ctx context.Context) ([]backup.Snapshot, error)
	Restore(ctx context.Context, loc *backup.Location, snapshot, folder, target string, includes []string) error
	// Find reads the location the identity's backup record names: where
	// the identity's last device backed up.
	Find(ctx context.Context) (backup.Location, error)
	// SetWords gives a device provisioned with a key file the backup
	// password of its words (which must be the node key's).
	SetWords(words, passphrase string) error
	// Friends are the nodes this node gives backup space; SetFriend
	// gives one (by DID or name) a quota, RemoveFriend takes it back.
	Friends() []backup.FriendStatus
	SetFriend(ctx context.Context, who string, quota int64) error
	RemoveFriend(did string, deleteData bool) error
}

// BackupFolder is the name the node's backups give the cloud's data
// folder (services/backup.Config.Folders).
const BackupFolder = "cloud"

// RestoreDir is where restores are written, inside the data folder
// (the same file system, so they are moved in, not copied), emptied at
// start: the node's backups leave it out.
const RestoreDir = "restore-staging"

// restoreJob is the last restore the owner started.
type restoreJob struct {
	mu      sync.Mutex
	running bool
	what    string
	err     string
	done    time.Time
	result  string // where the files went
}

func (j *restoreJob) get() (running bool, what, err, result string, done time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.running, j.what, j.err, j.result, j.done
}

// restoreStaging is the empty staging folder of a restore.
func (s *Server) restoreStaging() (string, error) {
	dir := filepath.Join(s.opts.DataDir, RestoreDir)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("restore: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	return dir, nil
}

// startRestore restores in the background: the whole cloud (full: its
// files and its state, the wizard's restore) or paths of the owner's
// files from snapshot into a folder "Restored <date>". Nothing present is
// overwritten.
func (s *Server) startRestore(loc *backup.Location, snapshot string, paths []string, full bool) error {
	b := s.opts.Backups
	j := &s.restore
	j.mu.Lock()
	if j.running {
		j.mu.Unlock()
		return backup.ErrBusy
	}
	what := "your whole cloud"
	if !full {
		what = strings.Join(paths, ", ")
	}
	j.running, j.what, j.err, j.result = true, what, "", ""
	j.mu.Unlock()
	go func() {
		result, err := s.restoreNow(b, loc, snapshot, paths, full)
		j.mu.Lock()
		defer j.mu.Unlock()
		j.running, j.done, j.result = false, s.opts.Now(), result
		if err != nil {
			j.err = err.Error()
			s.log.Error("restore failed", "what", what, "err", err)
			return
		}
		s.log.Info("restored", "what", what, "into", result)
	}()
	return nil
}

func (s *Server) restoreNow(b Backups, loc *backup.Location, snapshot string, paths []string, full bool) (string, error) {
	ctx := context.Background()
	staging, err := s.restoreStaging()
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	var includes []string
	for _, p := range paths {
		includes = append(includes, "files/"+strings.TrimPrefix(p, "/"))
	}
	if err := b.Restore(ctx, loc, snapshot, BackupFolder, staging, includes); err != nil {
		return "", err
	}
	into := ""
	if !full {
		into = "Restored " + s.opts.Now().Format("2006-01-02 15.04")
	}
	if _, err := os.Stat(filepath.Join(staging, "files")); err == nil {
		if _, err := s.store.Adopt(filepath.Join(staging, "files"), into); err != nil {
			return "", err
		}
	} else if !full {
		return "", fmt.Errorf("restore: snapshot %s holds none of %s", snapshot, strings.Join(paths, ", "))
	}
	if full {
		if err := s.state.adopt(filepath.Join(staging, "state")); err != nil {
			return "", err
		}
		if loc != nil {
			// Backups go on where they came from.
			if err := b.SetLocation(ctx, *loc); err != nil {
				s.log.Warn("restored, but the backup location was not kept", "err", err)
			}
		}
	}
	return "/" + into, nil
}

// backupView is the dashboard's backup card and the backup page.
type backupView struct {
	Status    backup.Status
	Location  backup.Location // without its secret
	Snapshots []backup.Snapshot
	SnapErr   string
	Friends   []backup.FriendStatus
	Restore   struct {
		Running           bool
		What, Err, Result string
		Done              time.Time
	}
}

func (s *Server) backupView(ctx context.Context, snapshots bool) *backupView {
	b := s.opts.Backups
	if b == nil {
		return nil
	}
	v := &backupView{Status: b.Status()}
	if loc, ok := b.Location(); ok {
		loc.SecretKey = ""
		v.Location = loc
	}
	v.Restore.Running, v.Restore.What, v.Restore.Err, v.Restore.Result, v.Restore.Done = s.restore.get()
	v.Friends = b.Friends()
	if snapshots && v.Status.Location != "" {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		snaps, err := b.Snapshots(ctx)
		if err != nil {
			v.SnapErr = err.Error()
		}
		for i := len(snaps) - 1; i >= 0 && len(v.Snapshots) < 50; i-- {
			v.Snapshots = append(v.Snapshots, snaps[i]) // newest first
		}
	}
	return v
}

// locationOf reads a location from the backup form. An S3 secret left
// empty keeps the one already set for the same store.
func (s *Server) locationOf(r *http.Request) backup.Location {
	loc := backup.Location{
		Kind: r.PostFormValue("kind"), URL: strings.TrimSpace(r.PostFormValue("url")),
		AccessKey: strings.TrimSpace(r.PostFormValue("access_key")), SecretKey: r.PostFormValue("secret_key"),
		Region: strings.TrimSpace(r.PostFormValue("region")), Node: strings.TrimSpace(r.PostFormValue("node")),
	}
	if loc.Kind == backup.KindS3 && loc.SecretKey == "" {
		if cur, ok := s.opts.Backups.Location(); ok && cur.Kind == loc.Kind && cur.URL == loc.URL && cur.AccessKey == loc.AccessKey {
			loc.SecretKey = cur.SecretKey
		}
	}
	return loc
}

// withBackups serves h when the node has backups, and a 404 otherwise.
func (s *Server) withBackups(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Backups == nil {
			s.fail(w, r, http.StatusNotFound, "Backups are off on this node.")
			return
		}
		h(w, r)
	}
}

func (s *Server) handleBackupAPI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backupView(r.Context(), r.URL.Query().Get("snapshots") == "1"))
}

func (s *Server) handleBackupPage(w http.ResponseWriter, r *http.Request) {
	v := s.backupView(r.Context(), true)
	s.render(w, r, http.StatusOK, "backup", "Backups", struct {
		*backupView
		Msg, Err string
	}{v, r.URL.Query().Get("msg"), r.URL.Query().Get("err")})
}

func (s *Server) handleBackupLocation(w http.ResponseWriter, r *http.Request) {
	loc := s.locationOf(r)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	if err := s.opts.Backups.SetLocation(ctx, loc); err != nil {
		back(w, r, "/_/backup", "", "That location does not work: "+err.Error())
		return
	}
	back(w, r, "/_/backup", "Backups go to "+loc.String()+" now; the first one starts shortly.", "")
}

func (s *Server) handleBackupNow(w http.ResponseWriter, r *http.Request) {
	if err := s.opts.Backups.Start(); err != nil {
		back(w, r, "/_/backup", "", err.Error())
		return
	}
	back(w, r, "/_/backup", "Backup started.", "")
}

func (s *Server) handleBackupRestore(w http.ResponseWriter, r *http.Request) {
	var paths []string
	for _, p := range strings.Split(r.PostFormValue("paths"), "\n") {
		if p = strings.Trim(strings.TrimSpace(p), "/"); p != "" {
			if strings.Contains("/"+p+"/", "/../") {
				back(w, r, "/_/backup", "", "A path may not contain \"..\".")
				return
			}
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		paths = []string{""} // everything in files/
	}
	snap := r.PostFormValue("snapshot")
	if snap == "" {
		snap = "latest"
	}
	if err := s.startRestore(nil, snap, paths, false); err != nil {
		back(w, r, "/_/backup", "", err.Error())
		return
	}
	back(w, r, "/_/backup", "Restoring; the files arrive in a new folder \"Restored <date>\", beside yours.", "")
}

func (s *Server) handleBackupWords(w http.ResponseWriter, r *http.Request) {
	if err := s.opts.Backups.SetWords(r.PostFormValue("words"), r.PostFormValue("passphrase")); err != nil {
		back(w, r, "/_/backup", "", err.Error())
		return
	}
	back(w, r, "/_/backup", "Thank you: backups can run now.", "")
}

func (s *Server) handleBackupFriend(w http.ResponseWriter, r *http.Request) {
	gb, err := strconv.ParseFloat(strings.TrimSpace(r.PostFormValue("quota_gb")), 64)
	if err != nil || gb <= 0 || gb > 1<<20 {
		back(w, r, "/_/backup", "", "Give the space in GB, for example 50.")
		return
	}
	who := r.PostFormValue("who")
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	if err := s.opts.Backups.SetFriend(ctx, who, int64(gb*(1<<30))); err != nil {
		back(w, r, "/_/backup", "", "Could not give "+who+" space: "+err.Error())
		return
	}
	back(w, r, "/_/backup", fmt.Sprintf("%s may keep %.0f GB of backups here.", strings.TrimSpace(who), gb), "")
}

func (s *Server) handleBackupUnfriend(w http.ResponseWriter, r *http.Request) {
	del := r.PostFormValue("delete") == "1"
	if err := s.opts.Backups.RemoveFriend(r.PostFormValue("did"), del); err != nil {
		back(w, r, "/_/backup", "", err.Error())
		return
	}
	msg := "No more backup space for that node; its backups stay until you delete them."
	if del {
		msg = "No more backup space for that node, and its backups are deleted."
	}
	back(w, r, "/_/backup", msg, "")
}
