package backup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// The restic release this package drives (its JSON messages and exit
// codes), which the image builds into /user/restic.
const (
	ResticModule  = "github.com/restic/restic"
	ResticVersion = "v0.18.1"
	ResticPackage = "cmd/restic"
)

// Errors restic reports with its exit codes.
var (
	// ErrNoRepository: nothing at the location yet (restic exit 10).
	ErrNoRepository = errors.New("backup: no repository at the location")
	// ErrWrongPassword: the repository was made with another password
	// (exit 12): another identity's backup, or not a PC2 backup.
	ErrWrongPassword = errors.New("backup: the repository does not open with this identity's backup password")
	// ErrLocked: another restic holds the repository's lock (exit 11).
	ErrLocked = errors.New("backup: the repository is locked by another backup or prune (a lock of a device that stopped in the middle expires 30 minutes later)")
	// ErrUnreachable: nothing answers at the location.
	ErrUnreachable = errors.New("backup: the location does not answer")
	// ErrFull: the location has no room (or its quota is used up).
	ErrFull = errors.New("backup: the location is full")
	// ErrNoPassword: the device does not know the backup password (an
	// identity provisioned as a key file, without its words).
	ErrNoPassword = errors.New("backup: no backup password on this device (type the 24 words on the dashboard)")
)

// Restic runs the restic program against one repository. Every command
// runs with --json and a minimal environment: the repository and its
// credentials in the environment (never the command line), the password
// from a file, the cache in CacheDir.
type Restic struct {
	// Bin is the restic program.
	Bin string
	// PasswordFile holds the repository password.
	PasswordFile string
	// CacheDir is restic's cache ("" : --no-cache).
	CacheDir string
	// Repo and Env are the repository and its credentials
	// (Location.repository).
	Repo string
	Env  []string
	// TempDir is where restic writes pack files before it uploads them
	// ("": the system's; on the appliance that is a tmpfs, in memory).
	TempDir string
	// GOGC and GOMEMLIMIT, if set, are the program's: lower trades CPU
	// for memory on small boards.
	GOGC, GOMEMLIMIT string
	// Connections, if set, bounds restic's connections to the location
	// (its default is 5): a restore holds a pack in memory per
	// connection.
	Connections int
	Log         *slog.Logger
	// probeURL, if set, is asked (HEAD) before restic runs (probe).
	probeURL string
	client   *http.Client
}

// maxStderr bounds what is kept of restic's stderr for an error.
const maxStderr = 8 << 10

// exitError is restic's own account of a failure (--json on stderr).
type exitError struct {
	MessageType string `json:"message_type"`
	Code        int    `json:"code"`
	Message     string `json:"message"`
}

// run runs restic with args; each JSON line on stdout goes to onLine (nil:
// discarded). The error tells what restic said.
func (r *Restic) run(ctx context.Context, onLine func([]byte), args ...string) error {
	return r.runOpts(ctx, false, onLine, args...)
}

// retryMark is how restic says it retries a failed request.
const retryMark = "returned error, retrying after"

// runOpts is run; with failFast, restic's first retry of a failed request
// ends the command with that request's error: opening a repository
// should answer now, not after restic's 15 minutes of retries (an S3
// bucket that does not exist is retried like a network error).
func (r *Restic) runOpts(ctx context.Context, failFast bool, onLine func([]byte), args ...string) error {
	if _, err := os.Stat(r.PasswordFile); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNoPassword
		}
		return fmt.Errorf("backup password: %w", err)
	}
	if args[0] != "init" {
		if err := r.probe(ctx); err != nil {
			return err
		}
	}
	full := []string{"--json", "--password-file", r.PasswordFile}
	if r.CacheDir != "" {
		full = append(full, "--cache-dir", r.CacheDir)
	} else {
		full = append(full, "--no-cache")
	}
	switch args[0] {
	case "init", "cat", "unlock":
	case "snapshots", "stats":
		// Reading the list must not wait for a prune's lock (the
		// dashboard asks while a backup runs).
		full = append(full, "--no-lock")
	default:
		// Another device of the identity (or a restic the owner runs)
		// may hold the lock for a while.
		full = append(full, "--retry-lock", "2m")
	}
	if r.Connections > 0 {
		// Each backend reads only its own options.
		for _, be := range []string{"rest", "s3"} {
			full = append(full, "-o", fmt.Sprintf("%s.connections=%d", be, r.Connections))
		}
	}
	full = append(full, args...)
	cmdCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cmdCtx, r.Bin, full...)
	tmp := r.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	} else if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	cmd.Env = append([]string{
		"PATH=/usr/bin:/bin",
		"HOME=" + tmp,
		"TMPDIR=" + tmp,
		"RESTIC_REPOSITORY=" + r.Repo,
		"RESTIC_PROGRESS_FPS=1",
	}, r.Env...)
	if r.GOGC != "" {
		cmd.Env = append(cmd.Env, "GOGC="+r.GOGC)
	}
	if r.GOMEMLIMIT != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+r.GOMEMLIMIT)
	}
	// On cancel, interrupt first: restic then removes its lock.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &limitedBuffer{max: maxStderr}
	var mu sync.Mutex
	retried, sawFull := "", false
	stderr.onLine = func(line string) {
		i := strings.Index(line, retryMark)
		if i < 0 {
			return
		}
		_, msg, _ := strings.Cut(line[i+len(retryMark):], ": ")
		// A location that says it is full stays full while restic
		// retries (for 15 minutes): stop now.
		isFull := isFullMessage(msg)
		mu.Lock()
		if retried == "" || !failFast || isFull {
			retried = msg
		}
		sawFull = sawFull || isFull
		mu.Unlock()
		if r.Log != nil {
			r.Log.Warn("backup: restic retries a request", "cmd", args[0], "err", oneLine(msg))
		}
		if failFast || isFull {
			cancel()
		}
	}
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("backup engine: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if b := sc.Bytes(); onLine != nil && len(b) > 0 && (b[0] == '{' || b[0] == '[') {
			onLine(b)
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if r.Log != nil {
		r.Log.Debug("restic", "cmd", args[0], "took", time.Since(start).Round(time.Millisecond), "err", err)
	}
	if err == nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	if sawFull {
		return &RunError{Op: args[0], Code: -1, Msg: oneLine(retried)}
	}
	if ctx.Err() != nil {
		if retried != "" {
			return fmt.Errorf("restic %s: %w (it was retrying: %s)", args[0], ctx.Err(), oneLine(retried))
		}
		return fmt.Errorf("restic %s: %w", args[0], ctx.Err())
	}
	if failFast && retried != "" {
		return locationError(retried)
	}
	return resticError(args[0], err, stderr.Bytes())
}

// locationError is the error of a request restic would retry: a missing
// S3 bucket (the standard NoSuchBucket message) means no repository,
// anything else that the location fails.
func locationError(msg string) error {
	msg = oneLine(msg)
	if strings.Contains(msg, "specified bucket does not exist") {
		return ErrNoRepository
	}
	return fmt.Errorf("%w properly: %s", ErrUnreachable, msg)
}

// RunError is a failed restic command: its exit code and what restic
// said. The known codes unwrap to this package's sentinels.
type RunError struct {
	Op   string
	Code int // -1: did not exit normally
	Msg  string
}

func (e *RunError) Error() string {
	if s := e.sentinel(); s == ErrFull {
		return fmt.Sprintf("%v (restic %s: %s)", s, e.Op, e.Msg)
	} else if s != nil {
		return s.Error()
	}
	if e.Msg == "" {
		return fmt.Sprintf("restic %s: exit status %d", e.Op, e.Code)
	}
	return fmt.Sprintf("restic %s: %s", e.Op, e.Msg)
}

func (e *RunError) Unwrap() error { return e.sentinel() }

func (e *RunError) sentinel() error {
	switch e.Code {
	case 10:
		return ErrNoRepository
	case 11:
		return ErrLocked
	case 12:
		return ErrWrongPassword
	}
	if isFullMessage(e.Msg) {
		return ErrFull
	}
	return nil
}

// isFullMessage tells whether msg is a location saying it is full.
func isFullMessage(msg string) bool {
	for _, m := range fullMarks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// fullMarks are how locations say they are full: rest-server's quota
// (507), S3 stores, a local disk.
var fullMarks = []string{"507 Insufficient Storage", "XMinioStorageFull", "QuotaExceeded", "no space left on device"}

// resticError is the RunError of restic's exit: its code, and its own
// message (--json on stderr) or the last lines it wrote.
func resticError(op string, err error, stderr []byte) error {
	e := &RunError{Op: op, Code: -1}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		e.Code = ee.ExitCode()
	}
	for _, line := range bytes.Split(stderr, []byte("\n")) {
		var m exitError
		if json.Unmarshal(line, &m) == nil && m.MessageType == "exit_error" {
			e.Msg = m.Message
		}
	}
	if e.Msg == "" {
		e.Msg = lastLines(stderr, 3)
	}
	if e.Msg == "" && e.Code == -1 {
		e.Msg = err.Error()
	}
	e.Msg = oneLine(e.Msg)
	return e
}

// lastLines returns the last n non-empty lines of b that are not JSON.
func lastLines(b []byte, n int) string {
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "{") {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "; ")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// limitedBuffer keeps the last max bytes written to it, and passes
// each whole line to onLine, if set.
type limitedBuffer struct {
	mu     sync.Mutex
	max    int
	buf    []byte
	line   []byte
	onLine func(string)
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onLine != nil {
		b.line = append(b.line, p...)
		for {
			i := bytes.IndexByte(b.line, '\n')
			if i < 0 {
				break
			}
			b.onLine(string(b.line[:i]))
			b.line = b.line[i+1:]
		}
		if len(b.line) > b.max {
			b.line = b.line[:0] // a line that long is no retry notice
		}
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}

// Progress is a running backup's or restore's state.
type Progress struct {
	Percent    float64 `json:"percent"`
	FilesDone  uint64  `json:"files_done"`
	TotalFiles uint64  `json:"total_files"`
	BytesDone  uint64  `json:"bytes_done"`
	TotalBytes uint64  `json:"total_bytes"`
	// Errors counts files restic could not read.
	Errors uint64 `json:"errors,omitempty"`
}

// Summary is what a finished backup did.
type Summary struct {
	Snapshot        string `json:"snapshot"`
	FilesNew        uint64 `json:"files_new"`
	FilesChanged    uint64 `json:"files_changed"`
	FilesUnmodified uint64 `json:"files_unmodified"`
	// DataAdded is what this backup added to the repository
	// (deduplicated, before compression); DataAddedPacked after.
	DataAdded       uint64 `json:"data_added"`
	DataAddedPacked uint64 `json:"data_added_packed"`
	TotalFiles      uint64 `json:"total_files"`
	TotalBytes      uint64 `json:"total_bytes"`
	// Unreadable lists files restic could not read (the snapshot holds
	// the rest).
	Unreadable []string `json:"unreadable,omitempty"`
}

// Init makes the repository.
func (r *Restic) Init(ctx context.Context) error {
	return r.run(ctx, nil, "init")
}

// Open checks that the repository exists and opens with the password
// (ErrUnreachable, ErrNoRepository, ErrWrongPassword otherwise).
func (r *Restic) Open(ctx context.Context) error {
	return r.runOpts(ctx, true, nil, "cat", "config")
}

// probe asks the location for the repository's config file (REST) or
// its bucket (S3) with a plain HEAD, before restic runs: restic retries
// a location that does not answer, or an S3 bucket that does not exist,
// for 15 minutes, where the owner choosing a location wants an answer
// now. Any HTTP answer means the location is reachable; a 404 means
// nothing is there yet (an S3 store answers 403 to an unsigned request
// for a bucket that exists).
func (r *Restic) probe(ctx context.Context) error {
	if r.probeURL == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, r.probeURL, nil)
	if err != nil {
		return err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ErrNoRepository
	}
	return nil
}

// probeTimeout bounds the probe.
const probeTimeout = 15 * time.Second

// Backup backs up paths (absolute) as one snapshot tagged with tags.
func (r *Restic) Backup(ctx context.Context, paths, excludes, tags []string, host string, progress func(Progress)) (Summary, error) {
	args := []string{"backup", "--host", host, "--one-file-system"}
	for _, e := range excludes {
		args = append(args, "--exclude", e)
	}
	for _, t := range tags {
		args = append(args, "--tag", t)
	}
	args = append(args, "--")
	args = append(args, paths...)
	var sum Summary
	var got bool
	err := r.run(ctx, func(line []byte) {
		var m struct {
			MessageType string  `json:"message_type"`
			PercentDone float64 `json:"percent_done"`
			TotalFiles  uint64  `json:"total_files"`
			FilesDone   uint64  `json:"files_done"`
			TotalBytes  uint64  `json:"total_bytes"`
			BytesDone   uint64  `json:"bytes_done"`
			ErrorCount  uint64  `json:"error_count"`
			// error
			Error struct{ Message string } `json:"error"`
			Item  string                   `json:"item"`
			// summary
			FilesNew            uint64 `json:"files_new"`
			FilesChanged        uint64 `json:"files_changed"`
			FilesUnmodified     uint64 `json:"files_unmodified"`
			DataAdded           uint64 `json:"data_added"`
			DataAddedPacked     uint64 `json:"data_added_packed"`
			TotalFilesProcessed uint64 `json:"total_files_processed"`
			TotalBytesProcessed uint64 `json:"total_bytes_processed"`
			SnapshotID          string `json:"snapshot_id"`
		}
		if json.Unmarshal(line, &m) != nil {
			return
		}
		switch m.MessageType {
		case "status":
			if progress != nil {
				progress(Progress{Percent: m.PercentDone * 100, FilesDone: m.FilesDone, TotalFiles: m.TotalFiles,
					BytesDone: m.BytesDone, TotalBytes: m.TotalBytes, Errors: m.ErrorCount})
			}
		case "error":
			if len(sum.Unreadable) < 20 {
				sum.Unreadable = append(sum.Unreadable, m.Item+": "+m.Error.Message)
			}
		case "summary":
			got = true
			sum.Snapshot, sum.FilesNew, sum.FilesChanged, sum.FilesUnmodified = m.SnapshotID, m.FilesNew, m.FilesChanged, m.FilesUnmodified
			sum.DataAdded, sum.DataAddedPacked = m.DataAdded, m.DataAddedPacked
			sum.TotalFiles, sum.TotalBytes = m.TotalFilesProcessed, m.TotalBytesProcessed
		}
	}, args...)
	var re *RunError
	if errors.As(err, &re) && re.Code == 3 && got {
		// Some files were unreadable; the snapshot holds the rest.
		err = nil
	}
	if err == nil && !got {
		return sum, errors.New("restic backup: no summary")
	}
	return sum, err
}

// Snapshot is one snapshot of the repository.
type Snapshot struct {
	ID    string    `json:"id"`
	Short string    `json:"short_id"`
	Time  time.Time `json:"time"`
	Paths []string  `json:"paths"`
	Host  string    `json:"hostname"`
	Tags  []string  `json:"tags,omitempty"`
	// Summary is there for snapshots of restic 0.17 and later.
	Summary *struct {
		TotalFiles uint64 `json:"total_files_processed"`
		TotalBytes uint64 `json:"total_bytes_processed"`
	} `json:"summary,omitempty"`
}

// Snapshots lists the repository's snapshots, oldest first.
func (r *Restic) Snapshots(ctx context.Context) ([]Snapshot, error) {
	var out []byte
	err := r.runOpts(ctx, true, func(line []byte) { out = append(out, line...) }, "snapshots")
	if err != nil {
		return nil, err
	}
	var snaps []Snapshot
	if err := json.Unmarshal(out, &snaps); err != nil {
		return nil, fmt.Errorf("restic snapshots: %w", err)
	}
	return snaps, nil
}

// Restore restores the contents of dir of snapshot (absolute in the
// snapshot) into target, which it fills: restored paths are relative to
// dir. includes, if any, restrict it to those paths (absolute in the
// snapshot).
func (r *Restic) Restore(ctx context.Context, snapshot, dir, target string, includes []string, progress func(Progress)) error {
	args := []string{"restore", snapshot + ":" + dir, "--target", target}
	for _, inc := range includes {
		rel := strings.TrimPrefix(strings.TrimPrefix(inc, dir), "/")
		args = append(args, "--include", "/"+rel)
	}
	return r.run(ctx, func(line []byte) {
		var m struct {
			MessageType   string  `json:"message_type"`
			PercentDone   float64 `json:"percent_done"`
			TotalFiles    uint64  `json:"total_files"`
			FilesRestored uint64  `json:"files_restored"`
			TotalBytes    uint64  `json:"total_bytes"`
			BytesRestored uint64  `json:"bytes_restored"`
		}
		if json.Unmarshal(line, &m) != nil || progress == nil || m.MessageType != "status" {
			return
		}
		progress(Progress{Percent: m.PercentDone * 100, FilesDone: m.FilesRestored, TotalFiles: m.TotalFiles,
			BytesDone: m.BytesRestored, TotalBytes: m.TotalBytes})
	}, args...)
}

// Retention is how many snapshots of each period forget keeps.
type Retention struct {
	Daily   int `json:"keep_daily,omitempty"`
	Weekly  int `json:"keep_weekly,omitempty"`
	Monthly int `json:"keep_monthly,omitempty"`
}

// Forget applies the retention to this host's snapshots and, with
// prune, removes the data no snapshot needs any more.
func (r *Restic) Forget(ctx context.Context, keep Retention, host string, prune bool) error {
	args := []string{"forget", "--host", host,
		"--keep-daily", fmt.Sprint(keep.Daily), "--keep-weekly", fmt.Sprint(keep.Weekly),
		"--keep-monthly", fmt.Sprint(keep.Monthly)}
	if prune {
		args = append(args, "--prune")
	}
	return r.run(ctx, nil, args...)
}

// Check verifies the repository's structure and reads back subset of
// its data ("5%", "1/10").
func (r *Restic) Check(ctx context.Context, subset string) error {
	args := []string{"check"}
	if subset != "" {
		args = append(args, "--read-data-subset", subset)
	}
	return r.run(ctx, nil, args...)
}

// Stats is the repository's size.
func (r *Restic) Stats(ctx context.Context) (size uint64, err error) {
	var m struct {
		TotalSize uint64 `json:"total_size"`
	}
	err = r.run(ctx, func(line []byte) { _ = json.Unmarshal(line, &m) }, "stats", "--mode", "raw-data")
	return m.TotalSize, err
}

// Unlock removes stale locks (of restic processes that died, for example
// in a power cut).
func (r *Restic) Unlock(ctx context.Context) error {
	return r.run(ctx, nil, "unlock")
}

// Version is the program's version line.
func Version(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", bin, err)
	}
	return strings.TrimSpace(string(out)), nil
}
