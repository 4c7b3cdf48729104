// Package files is the owner's file store of the personal cloud: the
// folder tree on the appliance's data partition that the web UI, share
// links and WebDAV read and write. Every file-system access goes through
// an os.Root, so "..", absolute paths and symlinks that lead out of the
// store are refused by construction, not by string checks alone. Uploads
// are written to a hidden temp folder and renamed over their target on
// Commit, so a crash, a failed upload or a full disk never leaves a
// partial file, and a quota is enforced while the bytes arrive.
package files

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TempDir is the reserved folder at the root that holds uploads in
// flight. Clean refuses the name (at any depth, so it can never be
// addressed), List and WebDAV hide it, and Open empties it.
const TempDir = ".pc2-uploads"

const (
	maxName = 255  // NAME_MAX of ext4
	maxPath = 4096 // PATH_MAX
)

// Errors returned by the Store, wrapped with the operation and the path.
// ErrNotFound matches fs.ErrNotExist, ErrExists fs.ErrExist and ErrBadPath
// fs.ErrInvalid, so generic callers keep working.
var (
	ErrNotFound = &kindError{"files: not found", fs.ErrNotExist}
	ErrExists   = &kindError{"files: already exists", fs.ErrExist}
	ErrBadPath  = &kindError{"files: bad path", fs.ErrInvalid}
	ErrQuota    = &kindError{"files: quota exceeded", nil}
	ErrDiskFull = &kindError{"files: disk full", nil}
	ErrIsDir    = &kindError{"files: is a folder", nil}
	ErrNotDir   = &kindError{"files: not a folder", nil}
)

type kindError struct {
	msg  string
	like error // the io/fs error this kind also matches
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return e.like != nil && target == e.like }

// osError is an error of the os package, classified into one of our kinds
// so errors.Is works for both, with the message of the os error.
type osError struct{ kind, err error }

func (e *osError) Error() string   { return e.err.Error() }
func (e *osError) Unwrap() []error { return []error{e.kind, e.err} }

// classify maps an error of the os package to one of our kinds; the path
// in an *os.PathError is dropped since our wrapping names it already.
func classify(err error) error {
	var pe *os.PathError
	inner := err
	if errors.As(err, &pe) {
		inner = pe.Err
	}
	var kind error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kind = ErrNotFound
	case errors.Is(err, fs.ErrExist):
		kind = ErrExists
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		kind = ErrDiskFull
	case errors.Is(err, syscall.ENOTDIR):
		kind = ErrNotDir
	case errors.Is(err, syscall.EISDIR):
		kind = ErrIsDir
	case errors.Is(err, syscall.ELOOP), escapes(inner):
		kind = ErrBadPath
	default:
		return inner
	}
	return &osError{kind, inner}
}

// escapes reports whether err is os.Root refusing a path (or a symlink)
// that leads out of the root. The os package does not export that error,
// so its text is all there is.
func escapes(err error) bool {
	return err != nil && err.Error() == "path escapes from parent"
}

func wrap(op, p string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*kindError); !ok {
		err = classify(err)
	}
	return fmt.Errorf("files: %s %q: %w", op, "/"+p, err)
}

// HTTPStatus is the HTTP status code for an error of the Store.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadPath):
		return http.StatusBadRequest
	case errors.Is(err, ErrQuota), errors.Is(err, ErrDiskFull):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrExists), errors.Is(err, ErrIsDir), errors.Is(err, ErrNotDir):
		return http.StatusConflict
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// Clean turns a slash-separated path relative to the root into its
// canonical form: "" for the root, otherwise "a/b" (no leading or
// trailing slash, no "." or empty elements). A leading "/" means the
// root. It refuses with ErrBadPath what must never reach the file system
// or could not be shown back to the user: "..", NUL and other control
// characters, backslashes (a Windows client's separator, never a name),
// the reserved TempDir and names longer than the file system allows.
// Callers decode URLs before calling Clean, so "%2e%2e" arrives as "..".
func Clean(p string) (string, error) {
	if len(p) > maxPath {
		return "", fmt.Errorf("files: path of %d bytes: %w", len(p), ErrBadPath)
	}
	var b strings.Builder
	for elem := range strings.SplitSeq(p, "/") {
		switch {
		case elem == "" || elem == ".":
			continue
		case elem == "..":
			return "", fmt.Errorf("files: %q: %w: \"..\"", p, ErrBadPath)
		case elem == TempDir:
			return "", fmt.Errorf("files: %q: %w: reserved name", p, ErrBadPath)
		case len(elem) > maxName:
			return "", fmt.Errorf("files: %q: %w: name longer than %d bytes", p, ErrBadPath, maxName)
		case strings.ContainsFunc(elem, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
			return "", fmt.Errorf("files: %q: %w: control character or backslash", p, ErrBadPath)
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(elem)
	}
	return b.String(), nil
}

// rootName is p as os.Root wants it: "." for the root itself.
func rootName(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// Options configure a Store.
type Options struct {
	Dir    string       // the files root; created 0700 if missing
	Quota  int64        // bytes the files may use in total; 0 = no quota
	Logger *slog.Logger // nil = discard
}

// Store is the file tree under Options.Dir. It is safe for concurrent use.
type Store struct {
	root  *os.Root
	dir   string
	quota int64
	log   *slog.Logger

	// mu serializes the namespace changes that must see a consistent
	// tree (check-then-rename, commit, remove) and guards the counts.
	mu       sync.Mutex
	used     int64 // bytes of committed regular files
	inflight int64 // bytes written to uploads not committed yet

	propsMu sync.Mutex // serializes the read-modify-write of dead properties

	// gen counts the changes that may replace a folder (Rename, Remove,
	// Adopt): a folder opened before (OpenRoot) may no longer be the one
	// at its path.
	gen atomic.Uint64
}

// Generation changes whenever a folder may have been replaced: an
// *os.Root from OpenRoot stays good for its path while it does not.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// Entry is a member of a folder as List reports it.
type Entry struct {
	Name    string
	IsDir   bool
	Size    int64
	ModTime time.Time
}

// Usage is the space the files use and the disk they live on has.
type Usage struct {
	Used, Quota, DiskFree, DiskTotal int64
}

// Open opens (creating if needed) the store in opts.Dir, removes what
// interrupted uploads left behind and counts the bytes in use.
func Open(opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Dir == "" {
		return nil, errors.New("files: open: no Dir")
	}
	if opts.Quota < 0 {
		return nil, fmt.Errorf("files: open %s: negative quota %d", opts.Dir, opts.Quota)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("files: open: %w", err)
	}
	root, err := os.OpenRoot(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("files: open: %w", err)
	}
	s := &Store{root: root, dir: opts.Dir, quota: opts.Quota, log: log}
	if err := s.resetTemp(); err != nil {
		root.Close()
		return nil, err
	}
	used, err := s.du("")
	if err != nil {
		root.Close()
		return nil, wrap("count usage", "", err)
	}
	s.used = used
	log.Info("files: opened", "dir", opts.Dir, "used", used, "quota", opts.Quota)
	return s, nil
}

// resetTemp empties TempDir: whatever is in it belongs to uploads that
// did not commit before the last shutdown or crash.
func (s *Store) resetTemp() error {
	if fi, err := s.root.Lstat(TempDir); err == nil {
		if !fi.IsDir() { // a leftover of an older layout or a stray file
			return fmt.Errorf("files: open %s: %s is not a folder", s.dir, TempDir)
		}
		if ents, err := fs.ReadDir(s.root.FS(), TempDir); err == nil && len(ents) > 0 {
			s.log.Info("files: removing interrupted uploads", "count", len(ents))
		}
		if err := s.root.RemoveAll(TempDir); err != nil {
			return fmt.Errorf("files: open %s: clear %s: %w", s.dir, TempDir, err)
		}
	}
	if err := s.root.Mkdir(TempDir, 0o700); err != nil {
		return fmt.Errorf("files: open %s: %w", s.dir, err)
	}
	return nil
}

// Close releases the root. Uploads still open fail afterwards.
func (s *Store) Close() error { return s.root.Close() }

// du is the size of the regular files under p (p itself if it is one),
// not following symlinks, skipping TempDir.
func (s *Store) du(p string) (int64, error) {
	var n int64
	err := fs.WalkDir(s.root.FS(), rootName(p), func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == TempDir {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// recount redoes the usage walk after a failure left the count unsure.
func (s *Store) recount() {
	used, err := s.du("")
	if err != nil {
		s.log.Warn("files: recount usage", "err", err)
		return
	}
	s.used = used
}

// Stat describes p, following symlinks that stay inside the root.
func (s *Store) Stat(p string) (fs.FileInfo, error) {
	p, err := Clean(p)
	if err != nil {
		return nil, err
	}
	fi, err := s.root.Stat(rootName(p))
	return fi, wrap("stat", p, err)
}

// Open opens the file p for reading. Folders are ErrIsDir.
func (s *Store) Open(p string) (*os.File, error) {
	p, err := Clean(p)
	if err != nil {
		return nil, err
	}
	f, err := s.open(p)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = ErrIsDir
	}
	if err != nil {
		f.Close()
		return nil, wrap("open", p, err)
	}
	return f, nil
}

// open opens the file or folder p for reading. O_NONBLOCK keeps a FIFO
// somebody put in the tree from blocking the open; the type is checked on
// the open file, so nothing can be swapped in between.
func (s *Store) open(p string) (*os.File, error) {
	f, err := s.root.OpenFile(rootName(p), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, wrap("open", p, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
		err = fmt.Errorf("%w: not a regular file", ErrBadPath)
	}
	if err != nil {
		f.Close()
		return nil, wrap("open", p, err)
	}
	return f, nil
}

// List returns the members of folder p, folders first, then by name.
// Symlinks are shown as what they point to; those leading out of the root
// or nowhere, and special files, are left out.
func (s *Store) List(p string) ([]Entry, error) {
	p, err := Clean(p)
	if err != nil {
		return nil, err
	}
	f, err := s.open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	infos, err := s.readDir(f, p, true)
	if err != nil {
		return nil, err
	}
	ents := make([]Entry, len(infos))
	for i, fi := range infos {
		ents[i] = Entry{Name: fi.Name(), IsDir: fi.IsDir(), ModTime: fi.ModTime()}
		if !fi.IsDir() {
			ents[i].Size = fi.Size()
		}
	}
	slices.SortFunc(ents, func(a, b Entry) int {
		if a.IsDir != b.IsDir {
			if a.IsDir {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)), cmp.Compare(a.Name, b.Name))
	})
	return ents, nil
}

// readDir returns the infos of the members of folder p (open as f) that
// the store can serve: symlinks resolved inside the root, links to
// folders only if dirLinks (WebDAV walks whole trees and a link to an
// ancestor would make that endless), no TempDir, no special files.
func (s *Store) readDir(f *os.File, p string, dirLinks bool) ([]fs.FileInfo, error) {
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, wrap("list", p, err)
	}
	infos := make([]fs.FileInfo, 0, len(ents))
	for _, e := range ents {
		if e.Name() == TempDir {
			continue
		}
		var fi fs.FileInfo
		if e.Type()&fs.ModeSymlink != 0 {
			fi, err = s.root.Stat(path.Join(rootName(p), e.Name()))
			if err == nil && fi.IsDir() && !dirLinks {
				continue
			}
		} else {
			fi, err = e.Info()
		}
		if err != nil {
			s.log.Debug("files: list: skipping", "path", path.Join(p, e.Name()), "err", err)
			continue
		}
		if fi.Mode().IsRegular() || fi.IsDir() {
			infos = append(infos, fi)
		}
	}
	return infos, nil
}

// Mkdir creates folder p; its parent must exist.
func (s *Store) Mkdir(p string) error {
	p, err := Clean(p)
	if err != nil {
		return err
	}
	if p == "" {
		return wrap("mkdir", p, ErrExists)
	}
	return wrap("mkdir", p, s.root.Mkdir(p, 0o700))
}

// MkdirAll creates folder p and any missing parents.
func (s *Store) MkdirAll(p string) error {
	p, err := Clean(p)
	if err != nil {
		return err
	}
	return wrap("mkdir", p, s.root.MkdirAll(rootName(p), 0o700))
}

// Rename renames or moves from to to, which must not exist. A symlink is
// moved itself, never what it points to.
func (s *Store) Rename(from, to string) error {
	defer s.gen.Add(1)
	from, err := Clean(from)
	if err != nil {
		return err
	}
	if to, err = Clean(to); err != nil {
		return err
	}
	op := "rename " + "/" + from + " to"
	switch {
	case from == "" || to == "":
		return wrap(op, to, fmt.Errorf("%w: cannot move the root", ErrBadPath))
	case strings.HasPrefix(to, from+"/"):
		return wrap(op, to, fmt.Errorf("%w: cannot move a folder into itself", ErrBadPath))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.root.Lstat(from); err != nil {
		return wrap("rename", from, err)
	}
	// Lstat, so a dangling or escaping symlink at to counts as existing.
	if _, err := s.root.Lstat(to); err == nil {
		return wrap(op, to, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return wrap(op, to, err)
	}
	return wrap(op, to, s.root.Rename(from, to))
}

// Remove removes the file or the whole folder p. A symlink is removed
// itself, never what it points to.
func (s *Store) Remove(p string) error {
	defer s.gen.Add(1)
	p, err := Clean(p)
	if err != nil {
		return err
	}
	if p == "" {
		return wrap("remove", p, fmt.Errorf("%w: cannot remove the root", ErrBadPath))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := s.root.Lstat(p)
	if err != nil {
		return wrap("remove", p, err)
	}
	if !fi.IsDir() {
		if err := s.root.Remove(p); err != nil {
			return wrap("remove", p, err)
		}
		if fi.Mode().IsRegular() {
			s.used -= fi.Size()
		}
		return nil
	}
	size, err := s.du(p)
	if err != nil {
		return wrap("remove", p, err)
	}
	if err := s.root.RemoveAll(p); err != nil {
		s.recount() // some of it may be gone
		return wrap("remove", p, err)
	}
	s.used -= size
	return nil
}

// OpenRoot opens folder p as an os.Root of its own, for share links of
// folders. The store's root itself is refused: it holds TempDir.
func (s *Store) OpenRoot(p string) (*os.Root, error) {
	p, err := Clean(p)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return nil, wrap("open root", p, fmt.Errorf("%w: cannot share the root", ErrBadPath))
	}
	r, err := s.root.OpenRoot(p)
	return r, wrap("open root", p, err)
}

// Usage reports the bytes in use and the state of the disk.
func (s *Store) Usage() (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return Usage{}, fmt.Errorf("files: statfs %s: %w", s.dir, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Usage{
		Used:      s.used,
		Quota:     s.quota,
		DiskFree:  int64(st.Bavail) * st.Bsize,
		DiskTotal: int64(st.Blocks) * st.Bsize,
	}, nil
}

// reserve accounts n more bytes to uploads in flight, refusing what
// would take the committed and in-flight bytes together over the quota:
// two concurrent uploads cannot both squeeze into the last free space.
func (s *Store) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quota > 0 && s.used+s.inflight+n > s.quota {
		return ErrQuota
	}
	s.inflight += n
	return nil
}

func (s *Store) release(n int64) {
	s.mu.Lock()
	s.inflight -= n
	s.mu.Unlock()
}

// fits reports whether n more bytes fit in the quota now; WebDAV uses it
// to refuse a PUT by its Content-Length before the body is sent.
func (s *Store) fits(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quota == 0 || s.used+s.inflight+n <= s.quota
}

// syncDir makes a rename in folder p durable.
func (s *Store) syncDir(p string) error {
	d, err := s.root.Open(rootName(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Adopt moves the entries of dir, a folder outside the store on the same
// file system (what a restore wrote), into the store's folder p, made if
// missing, and counts them in. Nothing is overwritten: a folder that
// exists on both sides is merged, and a file (or a folder meeting a file)
// whose name is taken comes in as "<name> (restored)" (or "(restored
// 2)"...). It returns how many entries it moved; the quota is not
// enforced (the owner's own data comes back), but a full disk fails the
// move.
func (s *Store) Adopt(dir, p string) (int, error) {
	defer s.gen.Add(1)
	p, err := Clean(p)
	if err != nil {
		return 0, err
	}
	if err := s.MkdirAll(p); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.recount()
	return s.adopt(dir, p)
}

// adopt is Adopt of dir into the existing folder p; s.mu is held.
func (s *Store) adopt(dir, p string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("files: adopt %s: %w", dir, err)
	}
	moved := 0
	for _, e := range ents {
		if e.Name() == TempDir && p == "" {
			continue
		}
		from := filepath.Join(dir, e.Name())
		name := e.Name()
		for i := 1; ; i++ {
			fi, err := s.root.Lstat(path.Join(rootName(p), name))
			if errors.Is(err, fs.ErrNotExist) {
				break
			} else if err != nil {
				return moved, wrap("adopt", path.Join(p, name), err)
			}
			if i == 1 && fi.IsDir() && e.IsDir() {
				n, err := s.adopt(from, path.Join(p, name))
				moved += n
				if err != nil {
					return moved, err
				}
				name = ""
				break
			}
			ext := path.Ext(e.Name())
			if e.IsDir() {
				ext = ""
			}
			suffix := " (restored)"
			if i > 1 {
				suffix = fmt.Sprintf(" (restored %d)", i)
			}
			name = strings.TrimSuffix(e.Name(), ext) + suffix + ext
		}
		if name == "" {
			continue // merged
		}
		// p is a folder inside the root (made or merged above through
		// it), so its path under s.dir names no symlink.
		if err := os.Rename(from, filepath.Join(s.dir, filepath.FromSlash(p), name)); err != nil {
			return moved, wrap("adopt", path.Join(p, name), err)
		}
		moved++
	}
	return moved, wrap("adopt", p, s.syncDir(p))
}
