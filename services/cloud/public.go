package cloud

import (
	"net/http"
	"path"
	"strings"

	"github.com/pc2/pc2/services/cloud/files"
)

// publicDir is the owner's folder served to everyone at /.
const publicDir = "public"

// handlePublic serves the public site: files of public/ at their path,
// index.html for a folder, never a listing. Before setup, / leads to the
// wizard; without an index.html, / is a small landing page.
func (s *Server) handlePublic(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.fail(w, r, http.StatusMethodNotAllowed, "the public site is read-only")
		return
	}
	if !s.state.setupDone() {
		if r.URL.Path == "/" {
			http.Redirect(w, r, "/_/setup", http.StatusSeeOther)
			return
		}
		s.fail(w, r, http.StatusNotFound, "Nothing here yet: this cloud is not set up.")
		return
	}
	p, err := files.Clean(r.URL.Path)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "bad path")
		return
	}
	root, err := s.store.OpenRoot(publicDir)
	if err == nil {
		defer root.Close()
		name := p
		if name == "" {
			name = "."
		}
		if f, err := root.Open(name); err == nil {
			defer f.Close()
			fi, err := f.Stat()
			if err == nil && fi.IsDir() {
				if !strings.HasSuffix(r.URL.Path, "/") {
					http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
					return
				}
				idx, err := root.Open(path.Join(name, "index.html"))
				if err == nil {
					defer idx.Close()
					if fi, err = idx.Stat(); err == nil && !fi.IsDir() {
						serveFile(w, r, idx, "index.html", fi.ModTime(), false)
						return
					}
				}
			} else if err == nil {
				serveFile(w, r, f, path.Base(name), fi.ModTime(), false)
				return
			}
		}
	}
	if p == "" {
		o := s.state.getOwner()
		s.render(w, r, http.StatusOK, "landing", "PC2 cloud", struct{ Name string }{o.Name})
		return
	}
	s.fail(w, r, http.StatusNotFound, "There is no page here.")
}
