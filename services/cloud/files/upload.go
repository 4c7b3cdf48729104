package files

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
)

// Upload is a file being written. The bytes go to a temp file in TempDir
// and become the target only on Commit, atomically, so readers never see
// a partial file and a failed overwrite keeps the old content. An Upload
// is not safe for concurrent use.
type Upload struct {
	s      *Store
	target string // cleaned
	tmp    string // path of the temp file inside the root
	f      *os.File
	n      int64 // bytes written, all reserved in s.inflight
	err    error // the first failure; the upload is aborted then
	done   bool  // committed or aborted
}

// Create starts an upload to p. The parent folder must exist; p may
// exist (it is replaced on Commit) but must not be a folder or a symlink
// (replacing a link would surprise whoever made it).
func (s *Store) Create(p string) (*Upload, error) {
	p, err := Clean(p)
	if err != nil {
		return nil, err
	}
	if err := s.checkTarget(p); err != nil {
		return nil, wrap("create", p, err)
	}
	tmp := path.Join(TempDir, rand.Text())
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, wrap("create", p, err)
	}
	return &Upload{s: s, target: p, tmp: tmp, f: f}, nil
}

// checkTarget checks that an upload may create or replace p.
func (s *Store) checkTarget(p string) error {
	if p == "" {
		return ErrIsDir
	}
	if dir := path.Dir(p); dir != "." {
		fi, err := s.root.Stat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return ErrNotDir
		}
	}
	fi, err := s.root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return ErrIsDir
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: target is not a regular file", ErrBadPath)
	}
	return nil
}

// Write appends b. Past the quota it fails with ErrQuota, on a full disk
// with ErrDiskFull; either way the upload is aborted.
func (u *Upload) Write(b []byte) (int, error) {
	if err := u.usable(); err != nil {
		return 0, err
	}
	want := int64(len(b))
	if err := u.s.reserve(want); err != nil {
		return 0, u.fail(err)
	}
	n, err := u.f.Write(b)
	u.n += int64(n)
	if n < len(b) {
		u.s.release(want - int64(n))
	}
	if err != nil {
		return n, u.fail(err)
	}
	return n, nil
}

var _ io.ReaderFrom = (*Upload)(nil)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// ReadFrom copies r to the upload with two pooled buffers: one is
// written to the file while the next is read from r, so a request body
// and the disk no longer take turns (an upload ran at 79 % of the disk's
// write speed that way; docs/benchmarks.md, "Personal cloud"). Errors of
// r are returned as they are and do not abort the upload; the caller
// decides. An error of the file (quota, full disk) stops the reading.
func (u *Upload) ReadFrom(r io.Reader) (int64, error) {
	type chunk struct {
		bp *[]byte
		n  int
	}
	free := make(chan *[]byte, 2)
	for range 2 {
		free <- bufPool.Get().(*[]byte)
	}
	full := make(chan chunk, 1)
	var (
		total int64
		werr  error
		wdone = make(chan struct{})
		stop  = make(chan struct{}) // closed on a write error
	)
	go func() {
		defer close(wdone)
		for c := range full {
			if werr == nil {
				w, err := u.Write((*c.bp)[:c.n])
				total += int64(w)
				if err != nil {
					werr = err
					close(stop)
				}
			}
			free <- c.bp
		}
	}()
	var rerr error
	for rerr == nil {
		var bp *[]byte
		select {
		case bp = <-free:
		case <-stop:
		}
		if bp == nil {
			break
		}
		// At least half a buffer per write: fewer, larger writes.
		n, err := io.ReadAtLeast(r, *bp, len(*bp)/2)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		rerr = err
		if n > 0 {
			full <- chunk{bp, n}
		} else {
			free <- bp
		}
	}
	close(full)
	<-wdone
	for range 2 {
		bufPool.Put(<-free)
	}
	if werr != nil {
		return total, werr
	}
	if rerr == io.EOF {
		return total, nil
	}
	return total, rerr
}

func (u *Upload) usable() error {
	switch {
	case u.err != nil:
		return u.err
	case u.done:
		return wrap("write", u.target, os.ErrClosed)
	}
	return nil
}

// fail aborts the upload and remembers why, so later calls report it.
func (u *Upload) fail(err error) error {
	u.err = wrap("upload", u.target, err)
	u.s.log.Debug("files: upload failed", "path", u.target, "err", err)
	u.Abort()
	return u.err
}

// Size is the number of bytes written so far.
func (u *Upload) Size() int64 { return u.n }

// Commit makes the written bytes the content of the target: fsync of the
// data, a rename over the target, fsync of the folder. After an error the
// upload is aborted and the target is as it was, except when only the
// last fsync failed: the new content is in place then, maybe not durably.
func (u *Upload) Commit() error {
	if err := u.usable(); err != nil {
		return err
	}
	// ext4 with delayed allocation may only notice a full disk here.
	if err := u.f.Sync(); err != nil {
		return u.fail(err)
	}
	err := u.f.Close()
	u.f = nil
	if err != nil {
		return u.fail(err)
	}
	s := u.s
	s.mu.Lock()
	var old int64
	err = s.checkTarget(u.target)
	if err == nil {
		if fi, e := s.root.Lstat(u.target); e == nil {
			old = fi.Size()
		}
		err = s.root.Rename(u.tmp, u.target)
	}
	if err == nil {
		u.done = true
		s.inflight -= u.n
		s.used += u.n - old
	}
	s.mu.Unlock()
	if err != nil {
		return u.fail(err)
	}
	if err := s.syncDir(path.Dir(u.target)); err != nil {
		return wrap("commit", u.target, err)
	}
	return nil
}

// Abort drops the upload and its temp file. It is a no-op after Commit or
// an earlier Abort.
func (u *Upload) Abort() {
	if u.done {
		return
	}
	u.done = true
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	if err := u.s.root.Remove(u.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		u.s.log.Warn("files: remove temp file", "path", u.tmp, "err", err)
	}
	u.s.release(u.n)
}
