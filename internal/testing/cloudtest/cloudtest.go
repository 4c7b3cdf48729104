// Package cloudtest drives a personal cloud (services/cloud) over HTTP the
// way a browser does, for the tests of the cloud itself, of the personal
// node, of the gateway path and of the appliance in QEMU: a cookie jar,
// redirects not followed, the CSRF token taken from the pages, and the
// setup wizard's steps.
package cloudtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Browser is one browser's session with a cloud at Base.
type Browser struct {
	T    testing.TB
	Base string // http://host:port
	// Host, if set, is sent as the Host header (a name at a gateway).
	Host string
	C    *http.Client
}

// New returns a browser for base; client may be nil.
func New(t testing.TB, base string, client *http.Client) *Browser {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if client != nil {
		c.Transport, c.Timeout = client.Transport, client.Timeout
	}
	return &Browser{T: t, Base: base, C: c}
}

// Response is an answer, read whole.
type Response struct {
	Code   int
	Body   string
	Header http.Header
}

// Location is the redirect target.
func (r Response) Location() string { return r.Header.Get("Location") }

// Err is the error message a page or JSON answer shows.
func (r Response) Err() string {
	if m := errRe.FindStringSubmatch(r.Body); m != nil {
		return m[1]
	}
	var j struct{ Error string }
	if json.Unmarshal([]byte(r.Body), &j) == nil && j.Error != "" {
		return j.Error
	}
	if len(r.Body) > 300 {
		return r.Body[:300]
	}
	return r.Body
}

// Do sends req (its URL relative to Base when it has no host).
func (b *Browser) Do(req *http.Request) Response {
	b.T.Helper()
	if req.URL.Host == "" {
		u, err := url.Parse(b.Base + req.URL.String())
		if err != nil {
			b.T.Fatal(err)
		}
		req.URL = u
	}
	if b.Host != "" {
		req.Host = b.Host
	}
	resp, err := b.C.Do(req)
	if err != nil {
		b.T.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return Response{resp.StatusCode, string(body), resp.Header}
}

// Get fetches path.
func (b *Browser) Get(path string) Response {
	b.T.Helper()
	req, _ := http.NewRequest("GET", path, nil)
	return b.Do(req)
}

// Post sends a form.
func (b *Browser) Post(path string, form url.Values) Response {
	b.T.Helper()
	req, _ := http.NewRequest("POST", path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.Do(req)
}

var (
	csrfRe  = regexp.MustCompile(`name="csrf" (?:content|value)="([^"]+)"`)
	wordsRe = regexp.MustCompile(`(?s)<ol class="words" id="words">(.*?)</ol>`)
	liRe    = regexp.MustCompile(`<li>([a-z]+)</li>`)
	posRe   = regexp.MustCompile(`data-pos="(\d+)"`)
	errRe   = regexp.MustCompile(`class="err"(?: id="[^"]*")?>([^<]*)<`)
)

// CSRF returns the token on the page at path.
func (b *Browser) CSRF(path string) string {
	b.T.Helper()
	r := b.Get(path)
	m := csrfRe.FindStringSubmatch(r.Body)
	if m == nil {
		b.T.Fatalf("GET %s: %d, no CSRF token in %.300q", path, r.Code, r.Body)
	}
	return m[1]
}

// Step posts one wizard action and expects to be sent on (303).
func (b *Browser) Step(action string, v url.Values) {
	b.T.Helper()
	if r := b.TryStep(action, v); r.Code != http.StatusSeeOther {
		b.T.Fatalf("wizard %s: %d %s", action, r.Code, r.Err())
	}
}

// TryStep posts one wizard action with the page's CSRF token.
func (b *Browser) TryStep(action string, v url.Values) Response {
	b.T.Helper()
	w := url.Values{}
	for k, vs := range v {
		w[k] = vs
	}
	w.Set("csrf", b.CSRF("/_/setup"))
	w.Set("action", action)
	return b.Post("/_/setup", w)
}

// CreateIdentity goes through the wizard's create, words and
// confirmation steps (one wrong answer first, which must be refused) and
// returns the words shown.
func (b *Browser) CreateIdentity() []string {
	b.T.Helper()
	b.Step("create", nil)
	r := b.Get("/_/setup")
	if r.Header.Get("Cache-Control") != "no-store" {
		b.T.Errorf("words page Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	m := wordsRe.FindStringSubmatch(r.Body)
	if m == nil {
		b.T.Fatalf("no words on the page: %.400q", r.Body)
	}
	var words []string
	for _, w := range liRe.FindAllStringSubmatch(m[1], -1) {
		words = append(words, w[1])
	}
	if len(words) != 24 {
		b.T.Fatalf("%d words shown", len(words))
	}
	b.Step("written", nil)
	if r := b.Get("/_/setup"); strings.Contains(r.Body, `id="words"`) {
		b.T.Fatal("words shown again after the owner said they are written down")
	}
	if r := b.Confirm(words, true); r.Code != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "is not right") {
		b.T.Fatalf("a wrong word was not refused: %d %s", r.Code, r.Err())
	}
	if r := b.Confirm(words, false); r.Code != http.StatusSeeOther {
		b.T.Fatalf("confirm: %d %s", r.Code, r.Err())
	}
	return words
}

// Confirm answers the confirmation step from words (one answer wrong if
// wrong is set).
func (b *Browser) Confirm(words []string, wrong bool) Response {
	b.T.Helper()
	page := b.Get("/_/setup").Body
	pos := posRe.FindAllStringSubmatch(page, -1)
	if len(pos) != 3 {
		b.T.Fatalf("confirmation asks %d words", len(pos))
	}
	v := url.Values{}
	for i, p := range pos {
		n, _ := strconv.Atoi(p[1])
		w := words[n-1]
		if wrong && i == 1 {
			w = "zoo"
			if words[n-1] == "zoo" {
				w = "abandon"
			}
		}
		// Typed carelessly: upper case, a trailing space.
		v.Set(fmt.Sprintf("word%d", i), strings.ToUpper(w)+" ")
	}
	return b.TryStep("confirm", v)
}

// Restore restores the identity of words in the wizard; a node with
// backups then asks about the data, which it skips (an empty cloud).
func (b *Browser) Restore(words string) {
	b.T.Helper()
	b.Step("restore", nil)
	b.Step("restore-words", url.Values{"words": {words}})
	if strings.Contains(b.Get("/_/setup").Body, `id="skip-data"`) {
		b.Step("skip-data", nil)
	}
}

// RestoreData restores the identity of words and then its data, from
// the location its backup record names (loc nil) or from loc, and
// waits until the wizard sends the browser to the login: the backup
// brought the owner back.
func (b *Browser) RestoreData(words string, loc url.Values, wait time.Duration) {
	b.T.Helper()
	b.Step("restore", nil)
	b.Step("restore-words", url.Values{"words": {words}})
	if loc == nil {
		b.Step("find-backup", nil)
		if r := b.Get("/_/setup"); !strings.Contains(r.Body, `id="found"`) {
			b.T.Fatalf("no backup found: %s", r.Err())
		}
		b.Step("restore-data", nil)
	} else {
		b.Step("restore-data-at", loc)
	}
	deadline := time.Now().Add(wait)
	for {
		r := b.Get("/_/setup")
		if r.Code == http.StatusSeeOther {
			if got := r.Header.Get("Location"); got != "/_/login?restored=1" {
				b.T.Fatalf("after the restore the wizard sent the browser to %q", got)
			}
			return
		}
		if !strings.Contains(r.Body, `id="restoring"`) {
			b.T.Fatalf("the restore stopped: %d %s", r.Code, r.Err())
		}
		if time.Now().After(deadline) {
			b.T.Fatalf("restore not done after %v", wait)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Password sets the owner password in the wizard.
func (b *Browser) Password(pw string) {
	b.T.Helper()
	b.Step("password", url.Values{"password": {pw}, "password2": {pw}})
}

// Claim claims label at the wizard's first name service and finishes.
func (b *Browser) Claim(label, invite string) Response {
	b.T.Helper()
	return b.TryStep("claim", url.Values{"label": {label}, "service": {"0"}, "invite": {invite}})
}

// Login logs in with pw.
func (b *Browser) Login(pw string) {
	b.T.Helper()
	if r := b.Post("/_/login", url.Values{"password": {pw}}); r.Code != http.StatusSeeOther {
		b.T.Fatalf("login: %d %s", r.Code, r.Err())
	}
}

// Upload stores data at path through the upload API.
func (b *Browser) Upload(path string, data io.Reader) Response {
	b.T.Helper()
	req, _ := http.NewRequest("PUT", "/_/api/files/"+(&url.URL{Path: path}).EscapedPath(), data)
	req.Header.Set("X-CSRF-Token", b.CSRF("/_/"))
	req.Header.Set("Accept", "application/json")
	return b.Do(req)
}

// Share makes a share link of path (days 0: no expiry) and returns its
// path (/s/<token>).
func (b *Browser) Share(path string, days int) string {
	b.T.Helper()
	req, _ := http.NewRequest("POST", "/_/share", strings.NewReader(url.Values{"path": {path}, "days": {strconv.Itoa(days)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRF-Token", b.CSRF("/_/"))
	req.Header.Set("Accept", "application/json")
	r := b.Do(req)
	var out struct{ URL string }
	if r.Code != http.StatusCreated || json.Unmarshal([]byte(r.Body), &out) != nil || out.URL == "" {
		b.T.Fatalf("share %s: %d %s", path, r.Code, r.Err())
	}
	return out.URL
}
