package cloud

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/cloud/files"
)

// login starts an owner session for r's browser.
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	t, _, err := s.auth.newSession(clientOf(r), r.UserAgent())
	if err != nil {
		return fmt.Errorf("could not start a session: %w", err)
	}
	setCookie(w, r, sessionCookie, t, "/", sessionMaxAge)
	return nil
}

// safeNext keeps a post-login redirect on this site's owner pages.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/_/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/_/"
	}
	return next
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if !s.state.setupDone() {
		http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
		return
	}
	if s.auth.session(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	// A fixed text, not one from the URL: a link must not put words on
	// the login page.
	note := ""
	if r.URL.Query().Get("restored") == "1" {
		note = "Your data is back from its backup. Log in with your owner password, as before."
	}
	s.render(w, r, code, "login", "Log in", struct {
		Next, Error, Name, Note string
	}{safeNext(r.FormValue("next")), msg, s.state.getOwner().Name, note})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.state.setupDone() {
		http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
		return
	}
	if !sameOrigin(r) {
		s.fail(w, r, http.StatusForbidden, "cross-site login refused")
		return
	}
	c := clientOf(r)
	ok, limited := s.auth.checkPassword(c, r.PostFormValue("password"))
	if limited {
		s.log.Warn("login rate limited", "client", c.IP)
		w.Header().Set("Retry-After", "6")
		s.renderLogin(w, r, http.StatusTooManyRequests, "Too many attempts. Wait a minute, then try again.")
		return
	}
	if !ok {
		s.log.Warn("failed login", "client", c.IP)
		s.renderLogin(w, r, http.StatusUnauthorized, "Wrong password.")
		return
	}
	if err := s.login(w, r); err != nil {
		s.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("owner logged in", "client", c.IP)
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	all := r.PostFormValue("all") == "1"
	if err := s.auth.endSession(r, all); err != nil {
		s.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	clearCookie(w, sessionCookie, "/")
	if all {
		s.log.Info("owner logged out everywhere")
	}
	http.Redirect(w, r, "/_/login", http.StatusSeeOther)
}

// UpdateActions start the device's updates from the dashboard.
type UpdateActions interface {
	// Check looks for a newer release at once and returns its version
	// ("" when up to date).
	Check(ctx context.Context) (string, error)
	// Install starts installing the release the last check found; its
	// progress shows in UpdateStatus, and the device reboots into it.
	Install() error
}

// UpdateStatus is the dashboard's view of the device's updates.
type UpdateStatus struct {
	// Last is the last update's result in words ("" for none).
	Last string
	// When is its time.
	When time.Time
	// NextCheck is the next look for updates (zero: the device does not
	// look by itself); Source is where it looks.
	NextCheck time.Time
	Source    string
	// Problem is the last check's error.
	Problem string
	// Available is a newer release found and not installed yet.
	Available string
	// Installing is the version being installed and Progress how far
	// ("receiving the root: 12 of 36 MB").
	Installing, Progress string
	// CanCheck: the device has an update server to check (an UpdateActions is set too).
	CanCheck bool
}

// dashboard is the dashboard's data.
type dashboard struct {
	DID      string
	Name     string
	NameLost string
	URL      string
	Node     NodeStatus
	Usage    files.Usage
	UsageErr string
	Version  string
	Updates  *UpdateStatus
	Backup   *backupView
	Logs     []string
	LogFile  bool // the whole log can be downloaded
	Sessions int
	Services []NameService
	// HasSettings: the device's settings page exists; Trial is a
	// network change on trial there.
	HasSettings bool
	Trial       *SettingsTrial
	Msg, Err    string
}

// nameURL is the friendly URL of name: the scheme and port of its names
// API (a local test domain on http://...:8080), else https.
func nameURL(name, api string) string {
	if name == "" {
		return ""
	}
	if u, err := url.Parse(api); err == nil && api != "" {
		host := name
		if p := u.Port(); p != "" {
			host += ":" + p
		}
		return u.Scheme + "://" + host + "/"
	}
	return "https://" + name + "/"
}

func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	o := s.state.getOwner()
	d := dashboard{DID: s.opts.Node.DID(), Name: o.Name, NameLost: o.NameLost, URL: nameURL(o.Name, o.NameAPI), Node: s.opts.Node.Status(),
		Version: s.opts.Version, Sessions: s.auth.sessionCount(), Services: s.opts.NameServices,
		Msg: r.URL.Query().Get("msg"), Err: r.URL.Query().Get("err")}
	if d.Version == "" {
		d.Version = "development"
	}
	if s.opts.Updates != nil {
		u := s.opts.Updates()
		u.CanCheck = u.CanCheck && s.opts.UpdateActions != nil
		d.Updates = &u
	}
	if ds := s.opts.DeviceSettings; ds != nil {
		d.HasSettings, d.Trial = true, ds.Form().Trial
	}
	d.Backup = s.backupView(r.Context(), false)
	var err error
	if d.Usage, err = s.store.Usage(); err != nil {
		d.UsageErr = err.Error()
	}
	d.LogFile = s.opts.LogFile != nil
	if s.opts.Logs != nil {
		d.Logs = s.opts.Logs.Lines()
		if n := len(d.Logs); n > 50 {
			d.Logs = d.Logs[n-50:]
		}
	}
	s.render(w, r, http.StatusOK, "dashboard", "Dashboard", d)
}

func (s *Server) handleName(w http.ResponseWriter, r *http.Request) {
	c, err := s.claimName(r.Context(), r)
	if err != nil {
		back(w, r, "/_/", "", err.Error())
		return
	}
	if err := s.state.updateOwner(c.into); err != nil {
		back(w, r, "/_/", "", err.Error())
		return
	}
	back(w, r, "/_/", "Claimed "+c.name+".", "")
}

func (s *Server) handlePassword(w http.ResponseWriter, r *http.Request) {
	if ok, _ := s.auth.checkPassword(clientOf(r), r.PostFormValue("current")); !ok {
		back(w, r, "/_/", "", "The current password is wrong (or too many attempts).")
		return
	}
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password2") || len(pw) < password.MinLength {
		back(w, r, "/_/", "", fmt.Sprintf("The new passwords differ or are shorter than %d characters.", password.MinLength))
		return
	}
	hash, err := password.Hash(pw)
	if err == nil {
		err = s.state.updateOwner(func(o *owner) { o.PasswordHash, o.PasswordAt = hash, s.opts.Now() })
	}
	if err != nil {
		back(w, r, "/_/", "", err.Error())
		return
	}
	s.auth.forgetPasswords()
	back(w, r, "/_/", "Password changed. Log out everywhere to end other sessions.", "")
}

// back redirects a form post to page with a message or an error, or
// answers JSON to fetch calls.
func back(w http.ResponseWriter, r *http.Request, page, msg, errMsg string) {
	if wantsJSON(r) {
		if errMsg != "" {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": errMsg})
		} else {
			writeJSON(w, http.StatusOK, map[string]string{"message": msg})
		}
		return
	}
	q := url.Values{}
	if msg != "" {
		q.Set("msg", msg)
	}
	if errMsg != "" {
		q.Set("err", errMsg)
	}
	if len(q) > 0 {
		page += "?" + q.Encode()
	}
	http.Redirect(w, r, page, http.StatusSeeOther)
}

// filesPage is the file browser's data.
type filesPage struct {
	Dir     string // "" is the root
	Crumbs  []crumb
	Entries []files.Entry
	Public  bool // inside public/
	Msg     string
	Err     string
	Shares  map[string]string // path -> share link of existing shares
}

type crumb struct{ Name, Path string }

func (s *Server) handleFilesPage(w http.ResponseWriter, r *http.Request) {
	dir, err := files.Clean(r.PathValue("path"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	fi, err := s.store.Stat(dir)
	if err == nil && !fi.IsDir() {
		http.Redirect(w, r, "/_/dl/"+escapePath(dir), http.StatusSeeOther)
		return
	}
	var entries []files.Entry
	if err == nil {
		entries, err = s.store.List(dir)
	}
	if err != nil {
		s.fail(w, r, files.HTTPStatus(err), err.Error())
		return
	}
	p := filesPage{Dir: dir, Entries: entries, Msg: r.URL.Query().Get("msg"), Err: r.URL.Query().Get("err"),
		Public: dir == publicDir || strings.HasPrefix(dir, publicDir+"/"), Shares: s.sharedPaths()}
	p.Crumbs = crumbs(dir)
	title := "Files"
	if dir != "" {
		title = path.Base(dir) + " - Files"
	}
	s.render(w, r, http.StatusOK, "files", title, p)
}

// itemPage is one file's or folder's page: its actions.
type itemPage struct {
	Path, Name string
	IsDir      bool
	Size       int64
	ModTime    time.Time
	Crumbs     []crumb
	Link       string // its share link, if any
	Msg, Err   string
}

// handleItem shows the actions on one file or folder (move, share,
// delete), which the listing leaves out so that a folder of many files
// stays a small page.
func (s *Server) handleItem(w http.ResponseWriter, r *http.Request) {
	p, err := files.Clean(r.PathValue("path"))
	if err == nil && p == "" {
		err = errors.New("the root has no actions")
	}
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	fi, err := s.store.Stat(p)
	if err != nil {
		s.fail(w, r, files.HTTPStatus(err), err.Error())
		return
	}
	d := itemPage{Path: p, Name: path.Base(p), IsDir: fi.IsDir(), Size: fi.Size(), ModTime: fi.ModTime(),
		Crumbs: crumbs(p), Link: s.sharedPaths()[p], Msg: r.URL.Query().Get("msg"), Err: r.URL.Query().Get("err")}
	s.render(w, r, http.StatusOK, "item", d.Name, d)
}

func crumbs(p string) []crumb {
	var out []crumb
	acc := ""
	for _, seg := range strings.Split(p, "/") {
		if seg == "" {
			continue
		}
		acc = path.Join(acc, seg)
		out = append(out, crumb{seg, acc})
	}
	return out
}

func escapePath(p string) string {
	return (&url.URL{Path: p}).EscapedPath()
}

func (s *Server) handleListAPI(w http.ResponseWriter, r *http.Request) {
	dir, err := files.Clean(r.PathValue("path"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	entries, err := s.store.List(dir)
	if err != nil {
		s.fail(w, r, files.HTTPStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, entries)
}

// serveFile serves one file of a store or share with range requests;
// attachment forces a download. User content gets the sandbox policy.
func serveFile(w http.ResponseWriter, r *http.Request, f io.ReadSeeker, name string, mod time.Time, attachment bool) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentCSP)
	if attachment {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	}
	http.ServeContent(w, r, name, mod, f)
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	p, err := files.Clean(r.PathValue("path"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	f, err := s.store.Open(p)
	if err != nil {
		s.fail(w, r, files.HTTPStatus(err), err.Error())
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		http.Redirect(w, r, "/_/files/"+escapePath(p), http.StatusSeeOther)
		return
	}
	serveFile(w, r, f, path.Base(p), fi.ModTime(), r.URL.Query().Get("inline") != "1")
}

// save streams body into the file p (atomically: see files.Upload).
func (s *Server) save(p string, body io.Reader) (int64, error) {
	up, err := s.store.Create(p)
	if err != nil {
		return 0, err
	}
	n, err := up.ReadFrom(body)
	if err != nil {
		up.Abort()
		return n, err
	}
	if err := up.Commit(); err != nil {
		return n, err
	}
	return n, nil
}

// handlePut stores a file from a raw request body (the upload script:
// one request per file, progress from the browser's upload events).
func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	p, err := files.Clean(r.PathValue("path"))
	if err != nil || p == "" {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("bad file path: %v", err))
		return
	}
	n, err := s.save(p, r.Body)
	if err != nil {
		s.log.Warn("upload failed", "path", p, "bytes", n, "err", err)
		s.fail(w, r, uploadStatus(err), fmt.Sprintf("upload of %s failed: %v", p, err))
		return
	}
	s.log.Info("uploaded", "path", p, "bytes", n)
	writeJSON(w, http.StatusCreated, map[string]any{"path": p, "size": n})
}

// uploadStatus: store errors as they are, a broken request body as 400.
func uploadStatus(err error) int {
	for _, e := range []error{files.ErrQuota, files.ErrDiskFull, files.ErrNotFound, files.ErrIsDir, files.ErrBadPath, files.ErrExists, files.ErrNotDir} {
		if errors.Is(err, e) {
			return files.HTTPStatus(err)
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// handleUpload stores the files of a multipart form (the upload form
// without scripts), part by part as they stream in.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	dir, err := files.Clean(r.URL.Query().Get("dir"))
	if err != nil {
		back(w, r, "/_/files/", "", err.Error())
		return
	}
	page := "/_/files/" + escapePath(dir)
	mr, err := r.MultipartReader()
	if err != nil {
		back(w, r, page, "", "not a file upload: "+err.Error())
		return
	}
	// The form's first field is its CSRF token (ownerMultipart).
	sess := sessionOf(r)
	ok := sameOrigin(r)
	if ok && r.Header.Get("X-CSRF-Token") == "" {
		part, err := mr.NextPart()
		ok = err == nil && part.FormName() == "csrf"
		if ok {
			b, _ := io.ReadAll(io.LimitReader(part, 200))
			ok = subtle.ConstantTimeCompare(b, []byte(sess.CSRF)) == 1
		}
	} else if ok {
		ok = csrfOK(r, sess.CSRF)
	}
	if !ok {
		s.fail(w, r, http.StatusForbidden, "the upload did not come from this cloud's pages (CSRF check failed); reload the page")
		return
	}
	var names []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			back(w, r, page, "", "upload interrupted: "+err.Error())
			return
		}
		if part.FormName() != "file" || part.FileName() == "" {
			part.Close()
			continue
		}
		name := path.Base(strings.ReplaceAll(part.FileName(), "\\", "/"))
		p, err := files.Clean(path.Join(dir, name))
		if err == nil {
			_, err = s.save(p, part)
		}
		part.Close()
		if err != nil {
			back(w, r, page, "", fmt.Sprintf("upload of %s failed: %v", name, err))
			return
		}
		names = append(names, name)
	}
	s.log.Info("uploaded", "dir", dir, "files", len(names))
	back(w, r, page, fmt.Sprintf("Uploaded %d file(s).", len(names)), "")
}

func (s *Server) handleMkdir(w http.ResponseWriter, r *http.Request) {
	dir, _ := files.Clean(r.PostFormValue("dir"))
	page := "/_/files/" + escapePath(dir)
	p, err := files.Clean(path.Join(dir, r.PostFormValue("name")))
	if err == nil && strings.TrimSpace(r.PostFormValue("name")) == "" {
		err = errors.New("give the folder a name")
	}
	if err == nil {
		err = s.store.Mkdir(p)
	}
	if err != nil {
		back(w, r, page, "", err.Error())
		return
	}
	back(w, r, page, "Created "+path.Base(p)+".", "")
}

func (s *Server) handleMove(w http.ResponseWriter, r *http.Request) {
	from, err := files.Clean(r.PostFormValue("from"))
	page := "/_/files/" + escapePath(path.Dir("/" + from)[1:])
	var to string
	if err == nil {
		to, err = files.Clean(r.PostFormValue("to"))
	}
	if err == nil && to == from {
		back(w, r, page, "", "")
		return
	}
	if err == nil {
		// A folder as target means "into it".
		if fi, serr := s.store.Stat(to); serr == nil && fi.IsDir() {
			to, err = files.Clean(path.Join(to, path.Base(from)))
		}
	}
	if err == nil {
		err = s.store.Rename(from, to)
	}
	if err != nil {
		back(w, r, page, "", err.Error())
		return
	}
	s.log.Info("moved", "from", from, "to", to)
	back(w, r, page, "Moved "+path.Base(from)+" to /"+to+".", "")
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	p, err := files.Clean(r.PostFormValue("path"))
	page := "/_/files/" + escapePath(path.Dir("/" + p)[1:])
	if err == nil && (p == "" || p == publicDir) {
		err = errors.New("the root and the public folder cannot be deleted")
	}
	if err == nil {
		err = s.store.Remove(p)
	}
	if err != nil {
		back(w, r, page, "", err.Error())
		return
	}
	s.log.Info("deleted", "path", p)
	back(w, r, page, "Deleted "+path.Base(p)+".", "")
}

// handleUpdateCheck is the dashboard's "Check for updates" button.
func (s *Server) handleUpdateCheck(w http.ResponseWriter, r *http.Request) {
	if s.opts.UpdateActions == nil {
		back(w, r, "/_/", "", "This device has no update server to check.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	v, err := s.opts.UpdateActions.Check(ctx)
	switch {
	case err != nil:
		back(w, r, "/_/", "", "Checking for updates: "+err.Error())
	case v == "":
		back(w, r, "/_/", "This device is up to date.", "")
	default:
		back(w, r, "/_/", "Version "+v+" is available.", "")
	}
}

// handleUpdateInstall is the dashboard's "Install" button for the
// version a check found.
func (s *Server) handleUpdateInstall(w http.ResponseWriter, r *http.Request) {
	if s.opts.UpdateActions == nil {
		back(w, r, "/_/", "", "This device has no update server.")
		return
	}
	if err := s.opts.UpdateActions.Install(); err != nil {
		back(w, r, "/_/", "", "Installing the update: "+err.Error())
		return
	}
	s.log.Info("owner started an update")
	back(w, r, "/_/", "The update is being installed; the device restarts into it when it is written.", "")
}
