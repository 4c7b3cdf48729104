package cloud

import (
	"net/http"
	"os"
	"path"
	"strings"
	"sync"

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
	root, done, err := s.public.open(s.store)
	if err == nil {
		defer done()
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

// publicRoot keeps the public folder open between requests (opening
// it, and closing it, took an eighth of the node's CPU on the public
// site's hot path: docs/benchmarks.md, "The real path"). The folder is
// reopened when the store says a folder may have been replaced
// (files.Store.Generation); a replaced one is closed once the requests
// that use it are done.
type publicRoot struct {
	mu  sync.Mutex
	cur *cachedRoot
}

type cachedRoot struct {
	root  *os.Root
	gen   uint64
	refs  int
	stale bool
}

// open returns the public folder and the func to call when done with it.
func (c *publicRoot) open(st *files.Store) (*os.Root, func(), error) {
	gen := st.Generation()
	c.mu.Lock()
	if c.cur != nil && c.cur.gen != gen {
		c.retire()
	}
	if c.cur == nil {
		c.mu.Unlock()
		r, err := st.OpenRoot(publicDir)
		if err != nil {
			return nil, nil, err
		}
		c.mu.Lock()
		if c.cur != nil || st.Generation() != gen {
			// Another request cached one meanwhile, or the folder
			// changed as it was opened: this one serves this request.
			c.mu.Unlock()
			return r, func() { r.Close() }, nil
		}
		c.cur = &cachedRoot{root: r, gen: gen}
	}
	cr := c.cur
	cr.refs++
	c.mu.Unlock()
	return cr.root, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if cr.refs--; cr.stale && cr.refs == 0 {
			cr.root.Close()
		}
	}, nil
}

// retire drops the cached folder, closing it once unused (c.mu held).
func (c *publicRoot) retire() {
	old := c.cur
	c.cur = nil
	old.stale = true
	if old.refs == 0 {
		old.root.Close()
	}
}

// close drops the cached folder (the server closes).
func (c *publicRoot) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil {
		c.retire()
	}
}
