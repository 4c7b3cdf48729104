package cloud

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFilesPublicShares: the owner's file operations in the web UI, the
// public site, share links (file, folder, expiry, revocation), WebDAV's
// authentication, and path traversal through each of them.
func TestFilesPublicShares(t *testing.T) {
	e := newEnv(t)
	b := e.setup("correct horse")
	files := filepath.Join(e.dir, "files")
	secret := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(secret, []byte("outside"), 0o600)
	os.WriteFile(filepath.Join(e.dir, "state", "not-a-file.txt"), []byte("state"), 0o600)

	// Upload, download with ranges.
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if r := b.Upload("docs/report.txt", bytes.NewReader(data)); r.Code != http.StatusNotFound {
		t.Fatalf("upload into a missing folder: %d %s", r.Code, r.Err())
	}
	if r := b.Post("/_/mkdir", url.Values{"csrf": {b.CSRF("/_/")}, "dir": {""}, "name": {"docs"}}); r.Code != http.StatusSeeOther {
		t.Fatal(r.Code)
	}
	if r := b.Upload("docs/report.txt", bytes.NewReader(data)); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	req, _ := http.NewRequest("GET", "/_/dl/docs/report.txt", nil)
	req.Header.Set("Range", "bytes=10-19")
	if r := b.Do(req); r.Code != http.StatusPartialContent || r.Body != "0123456789" ||
		!strings.Contains(r.Header.Get("Content-Disposition"), "attachment") || !strings.HasPrefix(r.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("range download: %d %q %v", r.Code, r.Body, r.Header)
	}
	if r := b.Get("/_/files/docs/"); r.Code != http.StatusOK || !strings.Contains(r.Body, "report.txt") {
		t.Fatalf("listing: %d", r.Code)
	}
	// The no-script upload form: multipart, the CSRF token first.
	var mp bytes.Buffer
	mp.WriteString("--XX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + b.CSRF("/_/") + "\r\n")
	mp.WriteString("--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"C:\\\\x\\\\form.txt\"\r\n\r\nform data\r\n--XX--\r\n")
	req, _ = http.NewRequest("POST", "/_/upload?dir=docs", bytes.NewReader(mp.Bytes()))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=XX")
	if r := b.Do(req); r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "Uploaded+1") {
		t.Fatalf("form upload: %d %s", r.Code, r.Location())
	}
	if got, _ := os.ReadFile(filepath.Join(files, "docs", "form.txt")); string(got) != "form data" {
		t.Fatalf("form upload stored %q", got)
	}
	req, _ = http.NewRequest("POST", "/_/upload?dir=docs", strings.NewReader(strings.Replace(mp.String(), b.CSRF("/_/"), "forged", 1)))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=XX")
	if r := b.Do(req); r.Code != http.StatusForbidden {
		t.Fatalf("form upload with a forged token: %d", r.Code)
	}
	// Each entry's actions are on its own page.
	if r := b.Get("/_/item/docs/report.txt"); r.Code != 200 || !strings.Contains(r.Body, `id="share"`) || !strings.Contains(r.Body, `value="docs/report.txt"`) {
		t.Fatalf("item page: %d", r.Code)
	}
	if r := b.Get("/_/item/"); r.Code != http.StatusBadRequest {
		t.Fatalf("item page of the root: %d", r.Code)
	}
	// Rename, move into a folder, delete.
	csrf := b.CSRF("/_/")
	for _, step := range []struct {
		path string
		v    url.Values
	}{
		{"/_/move", url.Values{"from": {"docs/form.txt"}, "to": {"docs/renamed.txt"}}},
		{"/_/mkdir", url.Values{"dir": {"docs"}, "name": {"old"}}},
		{"/_/move", url.Values{"from": {"docs/renamed.txt"}, "to": {"docs/old"}}},
	} {
		step.v.Set("csrf", csrf)
		if r := b.Post(step.path, step.v); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
			t.Fatalf("%s %v: %d %s", step.path, step.v, r.Code, r.Location())
		}
	}
	if _, err := os.Stat(filepath.Join(files, "docs", "old", "renamed.txt")); err != nil {
		t.Fatal(err)
	}
	if r := b.Post("/_/delete", url.Values{"csrf": {csrf}, "path": {"docs/old"}}); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("delete: %s", r.Location())
	}
	if _, err := os.Stat(filepath.Join(files, "docs", "old")); !os.IsNotExist(err) {
		t.Fatalf("folder still there after delete: %v", err)
	}

	// Path traversal in the web UI: refused, nothing outside touched.
	os.Symlink(secret, filepath.Join(files, "docs", "link.txt"))
	os.Symlink(filepath.Dir(secret), filepath.Join(files, "public", "out"))
	for _, p := range []string{"/_/dl/../state/not-a-file.txt", "/_/dl/..%2fstate%2fnot-a-file.txt", "/_/dl/%2e%2e/%2e%2e/etc/passwd",
		"/_/dl/docs/link.txt", "/_/dl//etc/passwd", "/_/files/..%2f..%2f", "/_/api/files/..%2f"} {
		r := b.Get(p)
		if r.Code == http.StatusOK || strings.Contains(r.Body, "outside") || strings.Contains(r.Body, "root:") || strings.Contains(r.Body, "state") && r.Code == 200 {
			t.Errorf("GET %s: %d %.100q", p, r.Code, r.Body)
		}
	}
	for _, v := range []url.Values{
		{"from": {"docs/report.txt"}, "to": {"../x.txt"}},
		{"from": {"../state/owner.json"}, "to": {"docs/owner.json"}},
		{"from": {"docs/report.txt"}, "to": {"docs/link.txt/x"}},
	} {
		v.Set("csrf", csrf)
		if r := b.Post("/_/move", v); !strings.Contains(r.Location(), "err=") {
			t.Errorf("move %v: %s", v, r.Location())
		}
	}
	if r := b.Upload("../escape.txt", strings.NewReader("x")); r.Code/100 == 2 {
		t.Errorf("upload to ../: %d", r.Code)
	}
	if r := b.Upload("docs/link.txt", strings.NewReader("overwrite")); r.Code == http.StatusCreated {
		// Replacing the link itself is fine; the target must stay.
		t.Logf("upload over a symlink replaced the link")
	}
	if got, _ := os.ReadFile(secret); string(got) != "outside" {
		t.Fatalf("a write went through a symlink out of the data dir: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "escape.txt")); err == nil {
		t.Fatal("upload escaped the files root")
	}

	// Public site: public/ at /, index.html for folders, no listing.
	os.WriteFile(filepath.Join(files, "public", "index.html"), []byte("<h1>hello</h1>"), 0o600)
	os.MkdirAll(filepath.Join(files, "public", "blog"), 0o700)
	os.WriteFile(filepath.Join(files, "public", "blog", "post.html"), []byte("post"), 0o600)
	anon := e.browser(e.relayed.URL)
	if r := anon.Get("/"); r.Code != 200 || r.Body != "<h1>hello</h1>" || !strings.HasPrefix(r.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("public /: %d %q", r.Code, r.Body)
	}
	if r := anon.Get("/blog/post.html"); r.Code != 200 || r.Body != "post" {
		t.Fatalf("public page: %d", r.Code)
	}
	for _, p := range []string{"/blog/", "/blog", "/docs/report.txt", "/../docs/report.txt", "/%2e%2e/docs/report.txt", "/..%2fdocs%2freport.txt", "/out/secret.txt", "/_/dl/docs/report.txt"} {
		r := anon.Get(p)
		if r.Code == 200 && (strings.Contains(r.Body, "0123456789") || strings.Contains(r.Body, "post.html") || strings.Contains(r.Body, "outside")) {
			t.Errorf("anonymous GET %s: %d %.100q", p, r.Code, r.Body)
		}
	}
	if r := anon.Get("/blog"); r.Code != http.StatusMovedPermanently {
		t.Errorf("/blog: %d, want a redirect to /blog/", r.Code)
	}
	if r := anon.Post("/", nil); r.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", r.Code)
	}

	// Share links: a file and a folder, seen logged out.
	fileLink := b.Share("docs/report.txt", 0)
	dirLink := b.Share("docs", 1)
	if r := anon.Get(fileLink); r.Code != 200 || r.Body != string(data) {
		t.Fatalf("file share: %d", r.Code)
	}
	if r := anon.Get(fileLink + "/x"); r.Code != http.StatusNotFound {
		t.Fatalf("path under a file share: %d", r.Code)
	}
	if r := anon.Get(dirLink); r.Code != 200 || !strings.Contains(r.Body, "report.txt") {
		t.Fatalf("folder share: %d", r.Code)
	}
	if r := anon.Get(dirLink + "/report.txt?dl=1"); r.Code != 200 || r.Body != string(data) || !strings.Contains(r.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("file in a folder share: %d", r.Code)
	}
	for _, p := range []string{"/../public/index.html", "/..%2fpublic%2findex.html", "/%2e%2e/public/index.html", "/link.txt", "/../../state/owner.json"} {
		r := anon.Get(dirLink + p)
		if r.Code == 200 {
			t.Errorf("folder share + %s: %d %.100q", p, r.Code, r.Body)
		}
	}
	if r := anon.Get("/s/AAAAAAAAAAAAAAAAAAAAAA"); r.Code != http.StatusNotFound {
		t.Fatalf("unknown share: %d", r.Code)
	}
	if r := b.Get("/_/shares"); !strings.Contains(r.Body, fileLink) {
		t.Fatal("shares page lacks the link")
	}
	e.clock.add(25 * time.Hour)
	if r := anon.Get(dirLink); r.Code != http.StatusGone {
		t.Fatalf("expired share: %d", r.Code)
	}
	// Revoke the file link.
	page := b.Get("/_/shares").Body
	i := strings.Index(page, fileLink)
	j := strings.LastIndex(page[:i], `data-id="`)
	id := page[j+9 : j+9+12]
	if r := b.Post("/_/unshare", url.Values{"csrf": {b.CSRF("/_/")}, "id": {id}}); !strings.Contains(r.Location(), "msg=") {
		t.Fatalf("revoke: %s", r.Location())
	}
	if r := anon.Get(fileLink); r.Code != http.StatusNotFound {
		t.Fatalf("revoked share: %d", r.Code)
	}

	// WebDAV: the owner password, nothing else.
	req, _ = http.NewRequest("PROPFIND", "/dav/docs/", nil)
	req.Header.Set("Depth", "1")
	if r := anon.Do(req); r.Code != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("WebDAV without a password: %d", r.Code)
	}
	req, _ = http.NewRequest("PROPFIND", "/dav/docs/", nil)
	req.Header.Set("Depth", "1")
	req.SetBasicAuth("owner", "correct horse")
	if r := anon.Do(req); r.Code != http.StatusMultiStatus || !strings.Contains(r.Body, "report.txt") {
		t.Fatalf("WebDAV PROPFIND: %d %.200q", r.Code, r.Body)
	}
	req, _ = http.NewRequest("PUT", "/dav/docs/x.txt", strings.NewReader("x"))
	req.SetBasicAuth("owner", "correct horse")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r := anon.Do(req); r.Code != http.StatusForbidden {
		t.Fatalf("cross-site WebDAV PUT with the password: %d", r.Code)
	}
	req, _ = http.NewRequest("GET", "/dav/../state/owner.json", nil)
	req.SetBasicAuth("owner", "correct horse")
	if r := anon.Do(req); r.Code == 200 {
		t.Fatalf("WebDAV traversal: %d", r.Code)
	}

	// A file name that is markup (put there by WebDAV, a share or a
	// restore) is shown as text.
	evil := `"><img src=x onerror=alert(1)>.txt`
	if err := os.WriteFile(filepath.Join(files, "docs", evil), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := b.Get("/_/files/docs/"); r.Code != 200 || strings.Contains(r.Body, "<img src=x") || !strings.Contains(r.Body, "&lt;img src=x onerror=alert(1)&gt;.txt") {
		t.Fatalf("a file name with markup in the listing: %d, escaped: %v", r.Code, strings.Contains(r.Body, "&lt;img"))
	}
}

// TestDashboard shows what the owner needs and stays small.
func TestDashboard(t *testing.T) {
	e := newEnv(t)
	b := e.setup("correct horse")
	r := b.Get("/_/")
	for _, want := range []string{e.node.DID(), "relayed", "sn1", "test", "in your files", "personal cloud not set up yet", `id="logs"`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("dashboard CSP %q", csp)
	}
	// The device's updates: none yet and no pulling, then a rollback and
	// the next check.
	if !strings.Contains(r.Body, "Last update: none yet") || !strings.Contains(r.Body, "Automatic updates: off") {
		t.Errorf("dashboard without updates lacks their state")
	}
	e.mu.Lock()
	e.updates = UpdateStatus{Last: "rolled back 1.2.0 (from 1.1.0): no health check passed", When: e.clock.now(),
		NextCheck: e.clock.now().Add(6 * time.Hour), Problem: "GET x: 404"}
	e.mu.Unlock()
	r = b.Get("/_/")
	for _, want := range []string{"rolled back 1.2.0 (from 1.1.0): no health check passed", "Next check for updates", "Last check: GET x: 404"} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	for _, a := range []string{"/_/assets/app.css", "/_/assets/app.js", "/_/assets/icon.svg"} {
		if r := b.Get(a); r.Code != 200 || r.Header.Get("Cache-Control") == "" {
			t.Errorf("%s: %d", a, r.Code)
		}
	}
	if r := b.Get("/_/assets/"); r.Code != http.StatusNotFound {
		t.Errorf("asset listing: %d", r.Code)
	}
}

// TestDashboardUpdateButtons: the owner checks for an update and installs
// the one found from the dashboard, and follows its progress; the buttons
// need the owner's session and its CSRF token.
func TestDashboardUpdateButtons(t *testing.T) {
	e := newEnv(t)
	b := e.setup("owner password")
	if r := b.Get("/_/"); strings.Contains(r.Body, "update-check") {
		t.Error("a check button on a device without an update server")
	}
	e.mu.Lock()
	e.updates = UpdateStatus{CanCheck: true, NextCheck: e.clock.now().Add(time.Hour)}
	e.mu.Unlock()
	r := b.Get("/_/")
	if !strings.Contains(r.Body, `id="update-check"`) || strings.Contains(r.Body, `id="update-install"`) {
		t.Fatalf("dashboard with an update server: check button %t, install button %t",
			strings.Contains(r.Body, `id="update-check"`), strings.Contains(r.Body, `id="update-install"`))
	}
	csrf := b.CSRF("/_/")

	// Strangers and forged forms change nothing.
	stranger := e.browser(e.local.URL)
	if r := stranger.Post("/_/update/install", url.Values{"csrf": {csrf}}); r.Code != http.StatusUnauthorized {
		t.Errorf("a stranger's install: %d, want 401", r.Code)
	}
	if r := b.Post("/_/update/check", nil); r.Code != http.StatusForbidden {
		t.Errorf("a check without the CSRF token: %d", r.Code)
	}
	e.actions.mu.Lock()
	if e.actions.checks+e.actions.installs != 0 {
		t.Errorf("refused requests reached the device: %d checks, %d installs", e.actions.checks, e.actions.installs)
	}
	e.actions.found = "1.3.0"
	e.actions.mu.Unlock()

	r = b.Post("/_/update/check", url.Values{"csrf": {csrf}})
	if r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "1.3.0") {
		t.Fatalf("check: %d %s", r.Code, r.Location())
	}
	e.mu.Lock()
	e.updates.Available = "1.3.0"
	e.mu.Unlock()
	if r := b.Get("/_/"); !strings.Contains(r.Body, "Install version 1.3.0 now") {
		t.Fatal("the dashboard does not offer the version found")
	}
	r = b.Post("/_/update/install", url.Values{"csrf": {csrf}})
	if r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "msg=") {
		t.Fatalf("install: %d %s", r.Code, r.Location())
	}
	e.actions.mu.Lock()
	if e.actions.installs != 1 {
		t.Errorf("%d installs, want 1", e.actions.installs)
	}
	e.actions.installEr = errors.New("another update is being installed")
	e.actions.mu.Unlock()
	if r := b.Post("/_/update/install", url.Values{"csrf": {csrf}}); !strings.Contains(r.Location(), "err=") {
		t.Errorf("a refused install: %s, want the error", r.Location())
	}

	// While it installs: its progress, the page refreshes, no buttons.
	e.mu.Lock()
	e.updates.Installing, e.updates.Progress = "1.3.0", "receiving the root: 12 of 36 MB"
	e.mu.Unlock()
	r = b.Get("/_/")
	for _, want := range []string{"Installing 1.3.0: receiving the root: 12 of 36 MB", `http-equiv="refresh"`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("dashboard during the install lacks %q", want)
		}
	}
	if strings.Contains(r.Body, `id="update-check"`) || strings.Contains(r.Body, `id="update-install"`) {
		t.Error("buttons during the install")
	}
}

// TestPublicFolderReplaced (issue 21): the public site keeps its folder
// open between requests; a public folder moved away and replaced by
// another serves the new one's files at once, never the old one's, and
// requests in flight meanwhile are answered.
func TestPublicFolderReplaced(t *testing.T) {
	e := newEnv(t)
	b := e.setup("correct horse")
	csrf := b.CSRF("/_/")
	b.Post("/_/mkdir", url.Values{"csrf": {csrf}, "dir": {""}, "name": {"public"}})
	if r := b.Upload("public/index.html", strings.NewReader("first site")); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	visitor := e.browser(e.relayed.URL)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bad atomic.Int32
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(e.relayed.URL + "/")
				if err != nil {
					bad.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || (string(body) != "first site" && string(body) != "second site" && !strings.Contains(string(body), "PC2 cloud")) {
					bad.Add(1)
				}
			}
		}()
	}
	if r := visitor.Get("/"); r.Body != "first site" {
		t.Fatalf("the first site: %d %q", r.Code, r.Body)
	}
	if r := b.Post("/_/move", url.Values{"csrf": {csrf}, "from": {"public"}, "to": {"old-site"}}); r.Code != http.StatusSeeOther {
		t.Fatalf("move the public folder away: %d %s", r.Code, r.Location())
	}
	if r := visitor.Get("/index.html"); r.Code != http.StatusNotFound {
		t.Fatalf("the public folder moved away: %d %q, want 404", r.Code, r.Body)
	}
	b.Post("/_/mkdir", url.Values{"csrf": {csrf}, "dir": {""}, "name": {"public"}})
	if r := b.Upload("public/index.html", strings.NewReader("second site")); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Err())
	}
	if r := visitor.Get("/"); r.Body != "second site" {
		t.Fatalf("the replaced public folder: %d %q, want the second site", r.Code, r.Body)
	}
	close(stop)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d requests during the replacement failed or got something else", n)
	}
}
