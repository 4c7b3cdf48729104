package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/restictest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
	"github.com/pc2/pc2/services/backup"
)

// words is the identity of these tests.
const words = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon " +
	"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"

// device is one node's backup service over a data folder.
type device struct {
	data string
	svc  *backup.Service
	pw   string
}

func newDevice(t *testing.T, restic string, loc *backup.Location, mnemonic string) *device {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "node.key")
	if err := identity.WriteBackupPassword(key, mnemonic, ""); err != nil {
		t.Fatal(err)
	}
	d := &device{data: filepath.Join(dir, "cloud"), pw: identity.BackupPasswordFile(key)}
	if err := os.MkdirAll(filepath.Join(d.data, "files"), 0o700); err != nil {
		t.Fatal(err)
	}
	svc, err := backup.New(backup.Config{
		Restic:       restic,
		PasswordFile: d.pw,
		StateDir:     filepath.Join(dir, "backup"),
		Folders:      map[string]string{"cloud": d.data},
		Excludes:     []string{filepath.Join(d.data, "files", ".pc2-uploads")},
		Host:         func() string { return "did:boson:test" },
		Default:      loc,
		Connections:  2, // as on the appliance
		Logger:       testlog.New(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.svc = svc
	return d
}

// fill writes n files of size bytes each, in a few folders.
func fill(t *testing.T, root string, n, size int) {
	t.Helper()
	for i := range n {
		p := filepath.Join(root, "files", "dir"+string(rune('a'+i%4)), "file"+string(rune('a'+i/4%26))+".bin")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTree fails unless every regular file under a is under b with the
// same bytes, and b has no file a lacks.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	seen := map[string]bool{}
	filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(a, p)
		if d.Type().IsRegular() {
			seen[rel] = true
			want, _ := os.ReadFile(p)
			got, err := os.ReadFile(filepath.Join(b, rel))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: restored %d bytes (%v), want the %d original bytes", rel, len(got), err, len(want))
			}
		}
		return nil
	})
	filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(b, p)
		if err == nil && d.Type().IsRegular() && !seen[rel] {
			t.Errorf("%s restored, but not in the original", rel)
		}
		return nil
	})
}

// atREST is a device of the test identity backing up to a fresh
// rest-server with maxSize bytes of quota (0: none).
func atREST(t *testing.T, restic string, maxSize int64) (*device, backup.Location, *restictest.RESTServer) {
	t.Helper()
	srv := restictest.StartRESTServer(t, maxSize)
	loc := backup.Location{Kind: backup.KindREST, URL: srv.URL + "alice/"}
	return newDevice(t, restic, &loc, words), loc, srv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// roundTrip backs up, changes one file in a hundred, backs up again
// (which must upload about that much), and restores into a fresh device
// that knows only the words and the location.
func roundTrip(t *testing.T, restic string, loc backup.Location) {
	a := newDevice(t, restic, &loc, words)
	fill(t, a.data, 100, 100<<10) // 10 MB of incompressible data
	os.MkdirAll(filepath.Join(a.data, "files", ".pc2-uploads"), 0o700)
	os.WriteFile(filepath.Join(a.data, "files", ".pc2-uploads", "partial"), []byte("half an upload"), 0o600)
	first, err := a.svc.BackupNow(ctx(t))
	if err != nil {
		t.Fatalf("first backup: %v", err)
	}
	if first.DataAdded < 100*100<<10 || first.FilesNew < 100 {
		t.Errorf("first backup added %d bytes in %d new files, want >= 10 MB in 100", first.DataAdded, first.FilesNew)
	}
	fill(t, a.data, 1, 100<<10) // one file of the hundred changes
	second, err := a.svc.BackupNow(ctx(t))
	if err != nil {
		t.Fatalf("second backup: %v", err)
	}
	if second.FilesChanged != 1 || second.DataAdded > 300<<10 {
		t.Errorf("second backup: %d files changed, %d bytes added; want 1 and about 100 KiB (deduplicated)", second.FilesChanged, second.DataAdded)
	}
	st := a.svc.Status()
	if st.LastError != "" || st.Last == nil || st.Last.Snapshot != second.Snapshot || st.Snapshots != 2 || st.Size == 0 || st.Warning != "" {
		t.Errorf("status after two backups: %+v", st)
	}

	// A fresh device: the words and the location, nothing else.
	b := newDevice(t, restic, nil, words)
	target := filepath.Join(t.TempDir(), "restored")
	if err := b.svc.Restore(ctx(t), &loc, "latest", "cloud", target, nil); err != nil {
		t.Fatalf("restore: %v", err)
	}
	os.RemoveAll(filepath.Join(a.data, "files", ".pc2-uploads")) // excluded
	sameTree(t, a.data, target)

	// The fresh device goes on backing up there; one folder of the
	// first snapshot, as it was then.
	if err := b.svc.SetLocation(ctx(t), loc); err != nil {
		t.Fatal(err)
	}
	snaps, err := b.svc.Snapshots(ctx(t))
	if err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots: %d, %v", len(snaps), err)
	}
	one := filepath.Join(t.TempDir(), "one")
	if err := b.svc.Restore(ctx(t), &loc, snaps[0].Short, "cloud", one, []string{"files/dira"}); err != nil {
		t.Fatalf("restore one folder: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(one, "files"))
	if len(ents) != 1 || ents[0].Name() != "dira" {
		t.Errorf("restoring files/dira restored %v", ents)
	}

	// Another identity's password does not open it.
	other, _ := identity.NewMnemonic(rand.Reader)
	c := newDevice(t, restic, nil, other)
	err = c.svc.Restore(ctx(t), &loc, "latest", "cloud", t.TempDir(), nil)
	if !errors.Is(err, backup.ErrWrongPassword) {
		t.Errorf("restore with another identity: %v, want ErrWrongPassword", err)
	}
}

func TestRESTServerRoundTrip(t *testing.T) {
	restic := restictest.Restic(t)
	srv := restictest.StartRESTServer(t, 0)
	roundTrip(t, restic, backup.Location{Kind: backup.KindREST, URL: srv.URL + "alice/"})
	// The server holds ciphertext only: no file name (nine bytes, which
	// random ciphertext of this size holds by chance about once in 10^14
	// runs; "dira" it held once in a few hundred) nor the DID.
	filepath.WalkDir(srv.Dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("filea.bin")) || bytes.Contains(b, []byte("did:boson")) {
				t.Errorf("%s holds plaintext", p)
			}
		}
		return nil
	})
}

func TestS3RoundTrip(t *testing.T) {
	restic := restictest.Restic(t)
	m := restictest.StartMinIO(t)
	roundTrip(t, restic, backup.Location{Kind: backup.KindS3, URL: m.URL + "/pc2-backups/alice", AccessKey: m.AccessKey, SecretKey: m.SecretKey})
}

// TestStockResticReadsIt: Debian's restic, outside PC2, lists and
// restores a PC2 repository with the password derived from the words.
func TestStockResticReadsIt(t *testing.T) {
	restic := restictest.Restic(t)
	stock := restictest.DebianRestic(t)
	a, loc, _ := atREST(t, restic, 0)
	fill(t, a.data, 20, 50<<10)
	if _, err := a.svc.BackupNow(ctx(t)); err != nil {
		t.Fatal(err)
	}
	pw, err := identity.BackupPasswordFromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "RESTIC_REPOSITORY=rest:"+loc.URL, "RESTIC_PASSWORD="+pw)
	run := func(args ...string) string {
		cmd := exec.Command(stock, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Log(strings.TrimSpace(run("version")))
	if out := run("snapshots"); !strings.Contains(out, a.data) {
		t.Errorf("stock restic snapshots does not show %s:\n%s", a.data, out)
	}
	target := t.TempDir()
	run("restore", "latest", "--target", target)
	sameTree(t, a.data, filepath.Join(target, a.data))
}

func TestBadInput(t *testing.T) {
	restic := restictest.Restic(t)

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		loc := backup.Location{Kind: backup.KindREST, URL: restictest.ClosedURL(t, "alice/")}
		a := newDevice(t, restic, &loc, words)
		fill(t, a.data, 3, 1000)
		_, err := a.svc.BackupNow(ctx(t))
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("backup to a closed port: %v, want connection refused", err)
		}
		st := a.svc.Status()
		if st.LastError == "" || !strings.Contains(st.Warning, "No backup has succeeded") {
			t.Errorf("status: %+v", st)
		}
	})

	t.Run("full then room", func(t *testing.T) {
		t.Parallel()
		a, _, srv := atREST(t, restic, 2<<20)
		fill(t, a.data, 40, 100<<10) // 4 MB > 2 MB of quota
		_, err := a.svc.BackupNow(ctx(t))
		if !errors.Is(err, backup.ErrFull) {
			t.Fatalf("backup over the quota: %v, want ErrFull", err)
		}
		t.Logf("over quota: %v", err)
		if st := a.svc.Status(); st.LastError == "" {
			t.Errorf("status shows no error: %+v", st)
		}
		// The cause goes away: the same folder, served with room.
		srv.Stop()
		big := restictest.StartRESTServerAt(t, srv.Dir, 0)
		a.svc.SetLocation(ctx(t), backup.Location{Kind: backup.KindREST, URL: big.URL + "alice/"})
		if _, err := a.svc.BackupNow(ctx(t)); err != nil {
			t.Fatalf("backup with room again: %v", err)
		}
		if st := a.svc.Status(); st.LastError != "" || st.Warning != "" {
			t.Errorf("status after the good backup: %+v", st)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		a, loc, _ := atREST(t, restic, 0)
		fill(t, a.data, 3, 1000)
		if _, err := a.svc.BackupNow(ctx(t)); err != nil {
			t.Fatal(err)
		}
		other, _ := identity.NewMnemonic(rand.Reader)
		b := newDevice(t, restic, &loc, other)
		fill(t, b.data, 3, 1000)
		if _, err := b.svc.BackupNow(ctx(t)); !errors.Is(err, backup.ErrWrongPassword) {
			t.Errorf("another identity's backup into alice's repository: %v, want ErrWrongPassword", err)
		}
		if err := b.svc.SetLocation(ctx(t), loc); !errors.Is(err, backup.ErrWrongPassword) {
			t.Errorf("choosing alice's repository as another identity: %v, want ErrWrongPassword", err)
		}
	})

	t.Run("corrupted pack", func(t *testing.T) {
		t.Parallel()
		a, _, srv := atREST(t, restic, 0)
		fill(t, a.data, 10, 100<<10)
		if _, err := a.svc.BackupNow(ctx(t)); err != nil {
			t.Fatal(err)
		}
		// Flip a byte in every pack file at the server.
		n := 0
		filepath.WalkDir(filepath.Join(srv.Dir, "alice", "data"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 0xff
				os.WriteFile(p, b, 0o600)
				n++
			}
			return nil
		})
		if n == 0 {
			t.Fatal("no pack files at the server")
		}
		err := a.svc.CheckNow(ctx(t))
		if err == nil {
			t.Fatal("check of a corrupted repository passed")
		}
		st := a.svc.Status()
		if !strings.Contains(st.Warning, "check") {
			t.Errorf("status warning after a failed check: %q", st.Warning)
		}
		t.Logf("check: %v", err)
		// The owner's files are untouched, and backing up still works.
		if _, err := a.svc.BackupNow(ctx(t)); err != nil {
			t.Errorf("backup after a failed check: %v", err)
		}
	})

	t.Run("no password", func(t *testing.T) {
		t.Parallel()
		a, _, _ := atREST(t, restic, 0)
		os.Remove(a.pw)
		if _, err := a.svc.BackupNow(ctx(t)); !errors.Is(err, backup.ErrNoPassword) {
			t.Errorf("backup without the password file: %v, want ErrNoPassword", err)
		}
		if st := a.svc.Status(); !strings.Contains(st.Warning, "24 words") {
			t.Errorf("warning: %q", st.Warning)
		}
	})

	t.Run("busy", func(t *testing.T) {
		t.Parallel()
		a, _, _ := atREST(t, restic, 0)
		fill(t, a.data, 50, 200<<10)
		if err := a.svc.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := a.svc.BackupNow(ctx(t)); !errors.Is(err, backup.ErrBusy) {
			t.Errorf("second backup while one runs: %v, want ErrBusy", err)
		}
		testenv.WaitFor(t, 2*time.Minute, "the background backup", func() bool {
			st := a.svc.Status()
			return st.Running == "" && !st.LastAttempt.IsZero()
		})
		if st := a.svc.Status(); st.LastError != "" {
			t.Errorf("background backup: %s", st.LastError)
		}
	})
}

// TestRestoreAfterStaleLock: the old device died holding the repository's
// exclusive lock (switched off in a prune). A fresh device's restore
// still goes through, without waiting on the lock.
func TestRestoreAfterStaleLock(t *testing.T) {
	restic := restictest.Restic(t)
	a, loc, srv := atREST(t, restic, 0)
	fill(t, a.data, 5, 1000)
	if _, err := a.svc.BackupNow(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// A restic that takes the exclusive lock and then waits for a new
	// password it is never given (a FIFO nobody writes): killed there,
	// it leaves its lock behind.
	fifo := filepath.Join(t.TempDir(), "new-password")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(restic, "--no-cache", "key", "passwd", "--new-password-file", fifo)
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY=rest:"+loc.URL, "RESTIC_PASSWORD_FILE="+a.pw)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	locks := filepath.Join(srv.Dir, "alice", "locks")
	testenv.WaitFor(t, time.Minute, "restic's exclusive lock", func() bool {
		ents, _ := os.ReadDir(locks)
		return len(ents) > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	if ents, _ := os.ReadDir(locks); len(ents) != 1 {
		t.Fatalf("%d locks after the kill, want the dead one's (restic said: %s)", len(ents), out.String())
	}

	b := newDevice(t, restic, nil, words)
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second) // restic waits 2 minutes for a live lock
	defer cancel()
	target := filepath.Join(t.TempDir(), "restored")
	if err := b.svc.Restore(c, &loc, "latest", "cloud", target, nil); err != nil {
		t.Fatalf("restore past a dead restic's lock: %v", err)
	}
	sameTree(t, a.data, target)
	if ents, _ := os.ReadDir(locks); len(ents) != 0 {
		t.Errorf("%d locks left after the restore", len(ents))
	}
}
