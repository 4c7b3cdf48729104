package files

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"sync"

	"golang.org/x/net/webdav"
	"golang.org/x/sys/unix"
)

// FileSystem is the store as a webdav.FileSystem: the same root, the same
// path rules (TempDir cannot be reached), the same atomic uploads and
// quota. A file opened for writing with O_CREATE or O_TRUNC is an Upload
// that commits on Close; other opens are read-only (O_RDWR without those
// flags only patches dead properties, which live in an extended attribute
// of the file, so they follow it through renames for free).
func (s *Store) FileSystem() webdav.FileSystem { return davFS{s} }

// DAV serves the store over WebDAV under prefix. It does no
// authentication; the caller wraps it.
func (s *Store) DAV(prefix string) http.Handler {
	h := &webdav.Handler{
		Prefix:     prefix,
		FileSystem: s.FileSystem(),
		LockSystem: webdav.NewMemLS(),
		Logger: func(r *http.Request, err error) {
			if err != nil {
				s.log.Debug("files: webdav", "method", r.Method, "path", r.URL.Path, "err", err)
			}
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &davState{}
		switch r.Method {
		case http.MethodPut:
			if r.ContentLength > 0 && !s.fits(r.ContentLength) {
				http.Error(w, webdav.StatusText(http.StatusInsufficientStorage), http.StatusInsufficientStorage)
				return
			}
			// webdav.Handler closes (and so would commit) the file even
			// when the body was cut short; the wrapper lets Close know.
			r.Body = &davBody{ReadCloser: r.Body, st: st}
		case "PROPFIND", "PROPPATCH":
			if code := checkXML(r); code != 0 {
				http.Error(w, webdav.StatusText(code), code)
				return
			}
		}
		ctx := context.WithValue(r.Context(), stateKey{}, st)
		h.ServeHTTP(&davWriter{ResponseWriter: w, st: st}, r.WithContext(ctx))
	})
}

// checkXML refuses a body that undeclares a namespace prefix
// (xmlns:p=""), which XML Namespaces 1.0 forbids and encoding/xml
// accepts. It returns 0 if the body is fine (or not XML at all: the
// handler answers that) and restores r.Body.
func checkXML(r *http.Request) int {
	const max = 1 << 20 // property requests are small
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	r.Body.Close()
	if err != nil {
		return http.StatusBadRequest
	}
	if len(b) > max {
		return http.StatusRequestEntityTooLarge
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.RawToken()
		if err != nil {
			return 0
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Space == "xmlns" && a.Value == "" {
					return http.StatusBadRequest
				}
			}
		}
	}
}

// davState is what DAV learns about a request while webdav.Handler runs
// it: whether the body failed and whether the store ran out of space.
type davState struct {
	mu      sync.Mutex
	bodyErr error
	fullErr error // ErrQuota or ErrDiskFull, turned into 507
}

type stateKey struct{}

func stateOf(ctx context.Context) *davState {
	st, _ := ctx.Value(stateKey{}).(*davState)
	return st
}

func (st *davState) record(body bool, err error) {
	if st == nil || err == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case body:
		st.bodyErr = cmpErr(st.bodyErr, err)
	case errors.Is(err, ErrQuota), errors.Is(err, ErrDiskFull):
		st.fullErr = cmpErr(st.fullErr, err)
	}
}

func (st *davState) errs() (body, full error) {
	if st == nil {
		return nil, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.bodyErr, st.fullErr
}

// cmpErr keeps the first error.
func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}

type davBody struct {
	io.ReadCloser
	st *davState
}

func (b *davBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.st.record(true, err)
	}
	return n, err
}

// davWriter answers 507 Insufficient Storage where webdav.Handler, which
// knows no such case, would answer a failed PUT, COPY or MKCOL with 405
// or 500.
type davWriter struct {
	http.ResponseWriter
	st      *davState
	swallow bool
}

func (w *davWriter) WriteHeader(code int) {
	if _, full := w.st.errs(); full != nil && code >= 400 {
		code = HTTPStatus(full)
		w.ResponseWriter.WriteHeader(code)
		io.WriteString(w.ResponseWriter, webdav.StatusText(code))
		w.swallow = true // the handler's text for its own code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *davWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *davWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type davFS struct{ s *Store }

// davErr turns an error of the Store into one webdav.Handler can read:
// it tests with os.IsNotExist and os.IsExist, which look only at the Err
// of an *os.PathError. Paths Clean refuses do "not exist", so TempDir and
// escaping symlinks look like nothing at all.
func davErr(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	stateOf(ctx).record(false, err)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrBadPath):
		err = fs.ErrNotExist
	case errors.Is(err, ErrExists):
		err = fs.ErrExist
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

func (d davFS) Mkdir(ctx context.Context, name string, _ os.FileMode) error {
	return davErr(ctx, "mkdir", name, d.s.Mkdir(name))
}

func (d davFS) OpenFile(ctx context.Context, name string, flag int, _ os.FileMode) (webdav.File, error) {
	p, err := Clean(name)
	if err != nil {
		return nil, davErr(ctx, "open", name, err)
	}
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 && flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		if flag&os.O_APPEND != 0 {
			return nil, &os.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
		}
		u, err := d.s.Create(p)
		if err != nil {
			return nil, davErr(ctx, "open", name, err)
		}
		return &davUpload{u: u, ctx: ctx, name: path.Base("/" + p)}, nil
	}
	f, err := d.s.open(p)
	if err != nil {
		return nil, davErr(ctx, "open", name, err)
	}
	return &davFile{f: f, s: d.s, p: p}, nil
}

func (d davFS) RemoveAll(ctx context.Context, name string) error {
	err := d.s.Remove(name)
	if errors.Is(err, ErrNotFound) {
		return nil // os.RemoveAll semantics, which webdav.Handler expects
	}
	return davErr(ctx, "remove", name, err)
}

func (d davFS) Rename(ctx context.Context, oldName, newName string) error {
	return davErr(ctx, "rename", oldName, d.s.Rename(oldName, newName))
}

func (d davFS) Stat(ctx context.Context, name string) (os.FileInfo, error) {
	fi, err := d.s.Stat(name)
	return fi, davErr(ctx, "stat", name, err)
}

// davFile is a file or folder opened for reading.
type davFile struct {
	f     *os.File
	s     *Store
	p     string
	infos []fs.FileInfo // Readdir's, read on first use
	read  bool
}

func (f *davFile) Read(b []byte) (int, error)                       { return f.f.Read(b) }
func (f *davFile) Seek(off int64, whence int) (int64, error)        { return f.f.Seek(off, whence) }
func (f *davFile) Stat() (fs.FileInfo, error)                       { return f.f.Stat() }
func (f *davFile) Close() error                                     { return f.f.Close() }
func (f *davFile) DeadProps() (map[xml.Name]webdav.Property, error) { return f.s.deadProps(f.f) }
func (f *davFile) Patch(p []webdav.Proppatch) ([]webdav.Propstat, error) {
	return f.s.patchProps(f.f, p)
}

func (f *davFile) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: f.p, Err: fs.ErrPermission}
}

// Readdir hides what List hides, and links to folders (see readDir).
func (f *davFile) Readdir(count int) ([]fs.FileInfo, error) {
	if !f.read {
		infos, err := f.s.readDir(f.f, f.p, false)
		if err != nil {
			return nil, err
		}
		f.infos, f.read = infos, true
	}
	if count <= 0 {
		all := f.infos
		f.infos = nil
		return all, nil
	}
	if len(f.infos) == 0 {
		return nil, io.EOF
	}
	n := min(count, len(f.infos))
	page := f.infos[:n]
	f.infos = f.infos[n:]
	return page, nil
}

// davUpload is a file opened for writing: an Upload that commits on Close
// unless something went wrong, in which case it aborts.
type davUpload struct {
	u    *Upload
	ctx  context.Context
	name string
	err  error // first failure of Write or ReadFrom
}

func (f *davUpload) Write(b []byte) (int, error) {
	n, err := f.u.Write(b)
	f.fail(err)
	return n, err
}

// ReadFrom keeps io.Copy on the Upload's pooled-buffer path.
func (f *davUpload) ReadFrom(r io.Reader) (int64, error) {
	n, err := f.u.ReadFrom(r)
	f.fail(err)
	return n, err
}

func (f *davUpload) fail(err error) {
	if err != nil {
		f.err = cmpErr(f.err, err)
		stateOf(f.ctx).record(false, err)
	}
}

func (f *davUpload) Close() error {
	body, _ := stateOf(f.ctx).errs()
	if err := cmpErr(cmpErr(f.err, body), f.ctx.Err()); err != nil {
		f.u.Abort()
		f.u.s.log.Debug("files: webdav upload aborted", "path", f.u.target, "err", err)
		return &os.PathError{Op: "close", Path: f.u.target, Err: err}
	}
	return davErr(f.ctx, "close", f.u.target, f.u.Commit())
}

// Stat describes the temp file, which becomes the target on Close, so the
// ETag webdav.Handler makes of it matches what later requests see.
func (f *davUpload) Stat() (fs.FileInfo, error) {
	if f.u.f == nil {
		return nil, &os.PathError{Op: "stat", Path: f.u.target, Err: os.ErrClosed}
	}
	fi, err := f.u.f.Stat()
	if err != nil {
		return nil, err
	}
	return namedInfo{fi, f.name}, nil
}

func (f *davUpload) Read([]byte) (int, error) {
	return 0, &os.PathError{Op: "read", Path: f.u.target, Err: fs.ErrPermission}
}

func (f *davUpload) Seek(int64, int) (int64, error) {
	return 0, &os.PathError{Op: "seek", Path: f.u.target, Err: fs.ErrPermission}
}

func (f *davUpload) Readdir(int) ([]fs.FileInfo, error) {
	return nil, &os.PathError{Op: "readdir", Path: f.u.target, Err: ErrNotDir}
}

// Dead properties set before Close (COPY copies them) go to the temp
// file and so arrive with it.
func (f *davUpload) DeadProps() (map[xml.Name]webdav.Property, error) {
	if f.u.f == nil {
		return nil, nil
	}
	return f.u.s.deadProps(f.u.f)
}

func (f *davUpload) Patch(p []webdav.Proppatch) ([]webdav.Propstat, error) {
	if f.u.f == nil {
		return nil, &os.PathError{Op: "proppatch", Path: f.u.target, Err: os.ErrClosed}
	}
	return f.u.s.patchProps(f.u.f, p)
}

// namedInfo is a temp file's info under the name of its target.
type namedInfo struct {
	fs.FileInfo
	name string
}

func (i namedInfo) Name() string { return i.name }

// propsAttr is the extended attribute that holds a file's dead
// properties, JSON-encoded. ext4 allows about 4 KiB of attributes per
// file, plenty for what clients store there.
const propsAttr = "user.pc2.davprops"

func (s *Store) deadProps(f *os.File) (map[xml.Name]webdav.Property, error) {
	var raw []byte
	err := control(f, func(fd int) (err error) {
		raw, err = getxattr(fd, propsAttr)
		return err
	})
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var list []webdav.Property
	if err := json.Unmarshal(raw, &list); err != nil {
		s.log.Warn("files: bad dead properties, ignoring them", "file", f.Name(), "err", err)
		return nil, nil
	}
	m := make(map[xml.Name]webdav.Property, len(list))
	for _, p := range list {
		m[p.XMLName] = p
	}
	return m, nil
}

func (s *Store) patchProps(f *os.File, patches []webdav.Proppatch) ([]webdav.Propstat, error) {
	s.propsMu.Lock()
	defer s.propsMu.Unlock()
	m, err := s.deadProps(f)
	if err != nil {
		return nil, err
	}
	if m == nil {
		m = map[xml.Name]webdav.Property{}
	}
	st := webdav.Propstat{Status: http.StatusOK}
	for _, patch := range patches {
		for _, p := range patch.Props {
			st.Props = append(st.Props, webdav.Property{XMLName: p.XMLName})
			if patch.Remove {
				delete(m, p.XMLName)
			} else {
				m[p.XMLName] = p
			}
		}
	}
	list := make([]webdav.Property, 0, len(m))
	for _, p := range m {
		list = append(list, p)
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	err = control(f, func(fd int) error {
		if len(list) == 0 {
			if err := unix.Fremovexattr(fd, propsAttr); err != nil && !errors.Is(err, unix.ENODATA) {
				return err
			}
			return nil
		}
		return unix.Fsetxattr(fd, propsAttr, raw, 0)
	})
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.E2BIG), errors.Is(err, unix.ERANGE), errors.Is(err, unix.EDQUOT):
		st.Status = http.StatusInsufficientStorage
	case errors.Is(err, unix.ENOTSUP):
		st.Status = http.StatusForbidden
	case err != nil:
		return nil, err
	}
	return []webdav.Propstat{st}, nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch
// the file to blocking mode for good.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func getxattr(fd int, name string) ([]byte, error) {
	for {
		n, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) { // grew in between
			continue
		}
		return buf[:n], err
	}
}
