package cloud

import (
	"errors"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pc2/pc2/services/cloud/files"
)

// Share links: /s/<token> for a file or a folder (whose files are at
// /s/<token>/<path>). Tokens are 128 random bits; a link may expire and
// can be revoked. A folder's link is served from that folder as its own
// os.Root, so nothing outside it can be reached, whatever the path.

const maxShares = 1000

func (st *stateStore) shareList() map[string]share {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]share, len(st.shares))
	for k, v := range st.shares {
		out[k] = *v
	}
	return out
}

// sharedPaths maps shared paths to their link, for the file browser.
func (s *Server) sharedPaths() map[string]string {
	out := map[string]string{}
	now := s.opts.Now()
	for t, sh := range s.state.shareList() {
		if sh.Expires.IsZero() || now.Before(sh.Expires) {
			out[sh.Path] = "/s/" + t
		}
	}
	return out
}

type shareRow struct {
	Token string
	share
	Expired bool
}

func (s *Server) handleSharesPage(w http.ResponseWriter, r *http.Request) {
	now := s.opts.Now()
	var rows []shareRow
	for t, sh := range s.state.shareList() {
		rows = append(rows, shareRow{t, sh, !sh.Expires.IsZero() && !now.Before(sh.Expires)})
	}
	slices.SortFunc(rows, func(a, b shareRow) int { return b.Created.Compare(a.Created) })
	s.render(w, r, http.StatusOK, "shares", "Share links", struct {
		Rows     []shareRow
		Msg, Err string
	}{rows, r.URL.Query().Get("msg"), r.URL.Query().Get("err")})
}

// handleShare makes a link to the form's path, valid for its "days"
// (empty or 0: until revoked).
func (s *Server) handleShare(w http.ResponseWriter, r *http.Request) {
	p, err := files.Clean(r.PostFormValue("path"))
	page := "/_/files/" + escapePath(path.Dir("/" + p)[1:])
	if err != nil || p == "" {
		back(w, r, page, "", "choose a file or folder to share")
		return
	}
	fi, err := s.store.Stat(p)
	if err != nil {
		back(w, r, page, "", err.Error())
		return
	}
	var expires time.Time
	if d := r.PostFormValue("days"); d != "" && d != "0" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 3650 {
			back(w, r, page, "", "expiry must be a number of days up to 3650")
			return
		}
		expires = s.opts.Now().Add(time.Duration(n) * 24 * time.Hour)
	}
	t := token(s.opts.Rand, 16)
	sh := &share{ID: tokenHash(t)[:12], Path: p, Dir: fi.IsDir(), Created: s.opts.Now(), Expires: expires}
	st := s.state
	st.mu.Lock()
	if len(st.shares) >= maxShares {
		st.mu.Unlock()
		back(w, r, page, "", "too many share links; revoke some first")
		return
	}
	st.shares[t] = sh
	err = st.save("shares.json", st.shares)
	if err != nil {
		delete(st.shares, t)
	}
	st.mu.Unlock()
	if err != nil {
		back(w, r, page, "", err.Error())
		return
	}
	s.log.Info("share link created", "path", p, "id", sh.ID, "expires", expires)
	if wantsJSON(r) {
		writeJSON(w, http.StatusCreated, map[string]string{"id": sh.ID, "url": "/s/" + t, "path": p})
		return
	}
	back(w, r, "/_/shares", "Link to /"+p+" created: /s/"+t, "")
}

func (s *Server) handleUnshare(w http.ResponseWriter, r *http.Request) {
	id := r.PostFormValue("id")
	st := s.state
	st.mu.Lock()
	old := maps.Clone(st.shares)
	found := false
	for t, sh := range st.shares {
		if sh.ID == id {
			delete(st.shares, t)
			found = true
		}
	}
	var err error
	if found {
		if err = st.save("shares.json", st.shares); err != nil {
			st.shares = old
		}
	}
	st.mu.Unlock()
	switch {
	case err != nil:
		back(w, r, "/_/shares", "", err.Error())
	case !found:
		back(w, r, "/_/shares", "", "no such share link")
	default:
		s.log.Info("share link revoked", "id", id)
		back(w, r, "/_/shares", "Link revoked.", "")
	}
}

// sharedDir is a shared folder's listing page.
type sharedDir struct {
	Base    string // /s/<token>
	Name    string // the shared folder's name
	Dir     string // path inside it
	Entries []files.Entry
}

func (s *Server) handleShared(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("token")
	s.state.mu.Lock()
	shp := s.state.shares[t]
	var sh share
	if shp != nil {
		sh = *shp
	}
	s.state.mu.Unlock()
	if shp == nil {
		s.fail(w, r, http.StatusNotFound, "This link does not exist, or it was revoked.")
		return
	}
	if !sh.Expires.IsZero() && !s.opts.Now().Before(sh.Expires) {
		s.fail(w, r, http.StatusGone, "This link has expired.")
		return
	}
	sub, err := files.Clean(r.PathValue("path"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	dl := r.URL.Query().Get("dl") == "1"
	if !sh.Dir {
		if sub != "" {
			s.fail(w, r, http.StatusNotFound, "no such file")
			return
		}
		f, err := s.store.Open(sh.Path)
		if err != nil {
			s.fail(w, r, files.HTTPStatus(err), "The shared file is gone.")
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || fi.IsDir() {
			s.fail(w, r, http.StatusNotFound, "The shared file is gone.")
			return
		}
		serveFile(w, r, f, path.Base(sh.Path), fi.ModTime(), dl)
		return
	}
	root, err := s.store.OpenRoot(sh.Path)
	if err != nil {
		s.fail(w, r, files.HTTPStatus(err), "The shared folder is gone.")
		return
	}
	defer root.Close()
	name := sub
	if name == "" {
		name = "."
	}
	f, err := root.Open(name)
	if err != nil {
		s.fail(w, r, statusOf(err), "No such file in this shared folder.")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.fail(w, r, http.StatusNotFound, "No such file in this shared folder.")
		return
	}
	if !fi.IsDir() {
		serveFile(w, r, f, path.Base(name), fi.ModTime(), dl)
		return
	}
	if sub != "" && !strings.HasSuffix(r.URL.Path, "/") {
		http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
		return
	}
	des, err := f.ReadDir(-1)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "cannot list the folder")
		return
	}
	d := sharedDir{Base: "/s/" + t, Name: path.Base(sh.Path), Dir: sub}
	for _, de := range des {
		// Never the root (it cannot be shared), so never the store's
		// hidden upload folder; symlinks are not followed for visitors.
		if de.Type()&fs.ModeSymlink != 0 {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue
		}
		d.Entries = append(d.Entries, files.Entry{Name: de.Name(), IsDir: de.IsDir(), Size: info.Size(), ModTime: info.ModTime()})
	}
	slices.SortFunc(d.Entries, func(a, b files.Entry) int {
		if a.IsDir != b.IsDir {
			if a.IsDir {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	s.render(w, r, http.StatusOK, "shared", d.Name, d)
}

// statusOf maps errors of an os.Root to HTTP: escapes and missing files
// are both a 404 to a visitor.
func statusOf(err error) int {
	if errors.Is(err, os.ErrPermission) {
		return http.StatusForbidden
	}
	return http.StatusNotFound
}
