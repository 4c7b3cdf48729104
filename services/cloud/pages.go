package cloud

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

//go:embed assets/*.css assets/*.js assets/*.svg
var assetFS embed.FS

//go:embed templates/*.html
var templateFS embed.FS

// appCSP is the policy of the owner's pages: nothing but this node's own
// scripts and styles, no framing.
const appCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// contentCSP is the policy of user content (public site, share links,
// downloads): a sandbox without allow-same-origin, so a page's scripts
// run in an opaque origin and cannot reach the owner's session.
const contentCSP = "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals"

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"size": func(v any) string {
		switch n := v.(type) {
		case int64:
			return humanSize(n)
		case uint64:
			return humanSize(int64(min(n, 1<<62)))
		case int:
			return humanSize(int64(n))
		}
		return fmt.Sprint(v)
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": path.Join,
	"sub":  func(a, b int64) int64 { return a - b },
	"pathURL": func(p string) string {
		// Each segment escaped, the slashes kept.
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		return strings.Join(segs, "/")
	},
	"inc": func(i int) int { return i + 1 },
	"trialOf": func(t *SettingsTrial, csrf string) any {
		if t == nil {
			return nil
		}
		return struct {
			*SettingsTrial
			CSRF string
		}{t, csrf}
	},
	"percent": func(a, b int64) int64 {
		if b <= 0 {
			return 0
		}
		return a * 100 / b
	},
}).ParseFS(templateFS, "templates/*.html"))

// page is what the layout template gets.
type page struct {
	Title string
	CSRF  string // of the owner's session (menu forms)
	Owner bool   // show the owner's menu
	Data  any
}

// render writes a full page; the body is built first so a template
// error is a clean 500, not half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name, title string, data any) {
	p := page{Title: title, Data: data}
	if sess := sessionOf(r); sess != nil {
		p.Owner, p.CSRF = true, sess.CSRF
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("page", "template", name, "err", err)
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", appCSP)
	h.Set("X-Frame-Options", "DENY")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache")
	}
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// wantsJSON: API paths and fetch calls that ask for JSON.
func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/_/api/") || strings.Contains(r.Header.Get("Accept"), "application/json")
}

// fail answers an error as JSON or as an error page.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if wantsJSON(r) {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	s.render(w, r, code, "error", http.StatusText(code), struct {
		Code    int
		Message string
	}{code, msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// assets serves the app's static files: small, cached for a day (their
// names do not change with versions, so not longer).
func (s *Server) assets() http.Handler {
	sub, err := fs.Sub(assetFS, "assets")
	if err != nil {
		panic(err)
	}
	fsrv := http.StripPrefix("/_/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=86400")
		fsrv.ServeHTTP(w, r)
	})
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /_/assets/", s.assets())
	mux.HandleFunc("GET /_/setup", s.handleSetup)
	mux.HandleFunc("POST /_/setup", s.handleSetup)
	mux.HandleFunc("GET /_/login", s.handleLoginPage)
	mux.HandleFunc("POST /_/login", s.handleLogin)
	mux.HandleFunc("POST /_/logout", s.owner(s.handleLogout))
	mux.HandleFunc("GET /_/{$}", s.owner(s.handleDashboard))
	mux.HandleFunc("GET /_/logs.txt", s.owner(s.handleLogFile))
	mux.HandleFunc("POST /_/name", s.owner(s.handleName))
	mux.HandleFunc("POST /_/password", s.owner(s.handlePassword))
	mux.HandleFunc("GET /_/files/{path...}", s.owner(s.handleFilesPage))
	mux.HandleFunc("GET /_/dl/{path...}", s.owner(s.handleDownload))
	mux.HandleFunc("GET /_/item/{path...}", s.owner(s.handleItem))
	mux.HandleFunc("GET /_/api/files/{path...}", s.owner(s.handleListAPI))
	mux.HandleFunc("PUT /_/api/files/{path...}", s.owner(s.handlePut))
	mux.HandleFunc("POST /_/upload", s.ownerMultipart(s.handleUpload))
	mux.HandleFunc("POST /_/mkdir", s.owner(s.handleMkdir))
	mux.HandleFunc("POST /_/move", s.owner(s.handleMove))
	mux.HandleFunc("POST /_/delete", s.owner(s.handleDelete))
	mux.HandleFunc("GET /_/backup", s.owner(s.withBackups(s.handleBackupPage)))
	mux.HandleFunc("GET /_/api/backup", s.owner(s.withBackups(s.handleBackupAPI)))
	mux.HandleFunc("POST /_/backup/location", s.owner(s.withBackups(s.handleBackupLocation)))
	mux.HandleFunc("POST /_/backup/now", s.owner(s.withBackups(s.handleBackupNow)))
	mux.HandleFunc("POST /_/backup/restore", s.owner(s.withBackups(s.handleBackupRestore)))
	mux.HandleFunc("POST /_/backup/words", s.owner(s.withBackups(s.handleBackupWords)))
	mux.HandleFunc("POST /_/backup/friend", s.owner(s.withBackups(s.handleBackupFriend)))
	mux.HandleFunc("POST /_/backup/unfriend", s.owner(s.withBackups(s.handleBackupUnfriend)))
	mux.HandleFunc("GET /_/domains", s.owner(s.handleDomainsPage))
	mux.HandleFunc("POST /_/domains", s.owner(s.handleDomainAdd))
	mux.HandleFunc("POST /_/domains/remove", s.owner(s.handleDomainRemove))
	mux.HandleFunc("POST /_/domains/register", s.owner(s.handleDomainRegister))
	mux.HandleFunc("GET /_/shares", s.owner(s.handleSharesPage))
	mux.HandleFunc("POST /_/share", s.owner(s.handleShare))
	mux.HandleFunc("POST /_/update/check", s.owner(s.handleUpdateCheck))
	mux.HandleFunc("POST /_/update/install", s.owner(s.handleUpdateInstall))
	mux.HandleFunc("GET /_/settings", s.owner(s.handleSettingsPage))
	mux.HandleFunc("POST /_/settings", s.owner(s.handleSettings))
	mux.HandleFunc("POST /_/settings/keep", s.owner(s.handleSettingsKeep))
	mux.HandleFunc("POST /_/settings/undo", s.owner(s.handleSettingsUndo))
	mux.HandleFunc("POST /_/unshare", s.owner(s.handleUnshare))
	mux.Handle("/_/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "no such page")
	}))
	mux.Handle("/dav/", s.dav(s.store.DAV("/dav")))
	mux.Handle("/dav", http.RedirectHandler("/dav/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /s/{token}", s.handleShared)
	mux.HandleFunc("GET /s/{token}/{path...}", s.handleShared)
	mux.HandleFunc("/", s.handlePublic)
	return mux
}
