// Package logfile keeps a service's log on disk (the appliance's perm
// partition) within a size cap: the current file and a few rotated ones,
// so the log survives a restart or a power cut and never fills the disk.
// Lines are written straight through (no buffer) and synced to the disk
// within SyncAfter of their write: a power cut loses at most the last
// seconds (the kernel alone left a minute's lines unwritten in QEMU).
package logfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/pc2/pc2/internal/atomicfile"
)

// Defaults: 1 MiB a file, the current one and 4 rotated (5 MiB in all).
const (
	DefaultMaxBytes = 1 << 20
	DefaultKeep     = 4
)

// SyncAfter is how soon after a write the file is synced (one sync for
// every line written meanwhile: an SD card is not written per line).
const SyncAfter = 2 * time.Second

// Writer appends to <dir>/<name> and rotates it to <name>.1 ... <name>.<keep>
// (the oldest dropped) when a write would take it past maxBytes.
type Writer struct {
	dir, name string
	maxBytes  int64
	keep      int

	mu      sync.Mutex
	f       *os.File
	size    int64
	pending *time.Timer // a sync is due
}

// Open opens (or creates) the log in dir, appending to what a previous
// run wrote; maxBytes and keep <= 0 take the defaults.
func Open(dir, name string, maxBytes int64, keep int) (*Writer, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if keep <= 0 {
		keep = DefaultKeep
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	w := &Writer{dir: dir, name: name, maxBytes: maxBytes, keep: keep}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) path(i int) string {
	if i == 0 {
		return filepath.Join(w.dir, w.name)
	}
	return filepath.Join(w.dir, w.name+"."+strconv.Itoa(i))
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path(0), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logfile: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends p (whole lines, as slog handlers write them), rotating
// first when it would not fit. A failing disk (full, read-only) loses the
// line, not the service: the error is returned to the handler, which
// writes on to its other outputs.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, errors.New("logfile: closed")
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxBytes {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > w.maxBytes {
		p = p[:w.maxBytes] // one line past the cap: its start
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	if w.pending == nil {
		f := w.f
		w.pending = time.AfterFunc(SyncAfter, func() {
			w.mu.Lock()
			w.pending = nil
			w.mu.Unlock()
			f.Sync() // a rotated or closed file was synced already: an error then is moot
		})
	}
	return n, err
}

// rotate shifts the files by one (w.mu held).
func (w *Writer) rotate() error {
	if w.pending != nil {
		w.pending.Stop() // synced here: the new file's lines get a timer of their own
		w.pending = nil
	}
	w.f.Sync()
	w.f.Close()
	w.f = nil
	os.Remove(w.path(w.keep))
	for i := w.keep - 1; i >= 0; i-- {
		if err := os.Rename(w.path(i), w.path(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("logfile: rotate: %w", err)
		}
	}
	if err := w.open(); err != nil {
		return err
	}
	// The renames and the new file last through a power cut: otherwise
	// the files could come back shifted by one, or the new one lost
	// with its lines.
	if err := atomicfile.SyncDir(filepath.Dir(w.path(0))); err != nil {
		return fmt.Errorf("logfile: rotate: %w", err)
	}
	return nil
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	if w.pending != nil {
		w.pending.Stop()
		w.pending = nil
	}
	w.f.Sync()
	err := w.f.Close()
	w.f = nil
	return err
}

// Copy writes the whole log to dst, oldest line first.
func (w *Writer) Copy(dst io.Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := w.keep; i >= 0; i-- {
		f, err := os.Open(w.path(i))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		_, err = io.Copy(dst, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
	}
	return nil
}
