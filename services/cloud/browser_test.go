package cloud

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/pc2/pc2/internal/testing/browsertest"
	"github.com/pc2/pc2/provisioning/identity"
)

// TestBrowser is the owner's whole journey in a real headless Chromium:
// the setup wizard, login, folders and uploads with the upload script,
// the public site and a share link seen by a visitor, and logging out;
// with a screenshot of each important page and no script errors or CSP
// violations on any of them.
func TestBrowser(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	const (
		folder = "Notes 2025" // a space: paths are escaped in links and by the script
		big    = "journal.txt"
		pw     = "correct horse battery"
	)
	// A few MB of text: large enough for the progress bar, and a share
	// link to a text file shows it in the page.
	var content []byte
	for i := 0; len(content) < 3<<20; i++ {
		content = fmt.Appendf(content, "%06d dear diary, today I uploaded a file to my own cloud\n", i)
	}
	tmp := t.TempDir()
	bigFile := filepath.Join(tmp, big)
	index := []byte(`<!doctype html><html><head><title>Alice</title></head><body><h1 id="hello">Hello from Alice's cloud</h1></body></html>`)
	indexFile := filepath.Join(tmp, "index.html")
	for p, data := range map[string][]byte{bigFile: content, indexFile: index} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The cloud as a browser on the local network reaches it (like
	// e.local), with the big upload held halfway: the test looks at the
	// progress bar while the PUT is in flight, however fast the machine.
	gate := &uploadGate{path: "/_/api/files/" + folder + "/" + big, hold: int64(len(content) / 2),
		held: make(chan struct{}), release: make(chan struct{})}
	srv := httptest.NewServer(gate.wrap(e.srv.Handler()))
	t.Cleanup(srv.Close)
	t.Cleanup(gate.open) // before srv.Close, which waits for the held handler
	base := srv.URL

	b := browsertest.New(t, browsertest.Options{})

	// 1. The wizard: / leads to it, with no setup code on the local network.
	b.Navigate(base + "/")
	b.WaitVisible("#create")
	if got, want := pathOf(t, b), "/_/setup"; got != want {
		t.Fatalf("/ before setup: got %s, want %s", got, want)
	}
	b.Screenshot("01-wizard")
	submit(b, "#create", "#words")
	words := evalJS[[]string](t, b, `Array.from(document.querySelectorAll("#words > li"), li => li.textContent.trim())`)
	if len(words) != 24 {
		t.Fatalf("got %d words, want 24: %q", len(words), words)
	}
	b.Screenshot("02-words")
	submit(b, "#written", "#word0")
	// A wrong word first: refused, and the same page asks again.
	for i, pos := range askedPositions(t, b) {
		w := words[pos-1]
		if i == 1 {
			w = "zoo"
			if words[pos-1] == w {
				w = "abandon"
			}
		}
		b.Type(fmt.Sprintf("#word%d", i), w)
	}
	submit(b, "#confirm", "#err")
	if got := b.Text("#err"); !strings.Contains(got, "is not right") {
		t.Errorf("error for a wrong word: got %q, want it to say the word is not right", got)
	}
	b.Screenshot("03-confirm-wrong-word")
	for i, pos := range askedPositions(t, b) {
		b.Type(fmt.Sprintf("#word%d", i), words[pos-1])
	}
	submit(b, "#confirm", "#set-password")
	did := e.node.DID()
	if did == "" {
		t.Fatal("the node has no identity after the words were confirmed")
	}
	want, err := identity.NodeKeyFromMnemonic(strings.Join(words, " "), "")
	if err != nil {
		t.Fatal(err)
	}
	if !e.node.Key().Equal(want) {
		t.Fatal("the node's identity is not the one of the words shown")
	}
	if got := b.Text("#did"); got != did {
		t.Errorf("password step shows DID %q, want %q", got, did)
	}
	b.Type("#password", pw)
	b.Type("#password2", pw)
	submit(b, "#set-password", "#skip")
	submit(b, "#skip", "#did")
	if got, want := pathOf(t, b), "/_/"; got != want {
		t.Errorf("after the wizard: got %s, want the dashboard %s", got, want)
	}
	if got := b.Text("#did"); got != did {
		t.Errorf("dashboard DID: got %q, want %q", got, did)
	}
	if !e.srv.SetupDone() {
		t.Error("setup not done after the wizard")
	}
	b.Screenshot("04-dashboard")

	// 2. Log out, then in again: a wrong password first.
	submit(b, "#logout", "#login")
	if got, want := pathOf(t, b), "/_/login"; got != want {
		t.Errorf("after logout: got %s, want %s", got, want)
	}
	b.Type("#password", "not my password")
	submit(b, "#login", "#err")
	if got, want := b.Text("#err"), "Wrong password."; got != want {
		t.Errorf("wrong password: got %q, want %q", got, want)
	}
	b.Screenshot("05-login-wrong-password")
	b.Type("#password", pw)
	submit(b, "#login", "#did")
	if got, want := pathOf(t, b), "/_/"; got != want {
		t.Errorf("after login: got %s, want %s", got, want)
	}

	// 3. A folder, and a big file uploaded into it by the script: an XHR
	// PUT with a progress bar, then the page reloads with a message.
	b.Navigate(base + "/_/files/")
	b.WaitVisible("#mkdir")
	b.Type("#folder-name", folder)
	submit(b, "#mkdir", "#msg")
	if got, want := b.Text("#msg"), "Created "+folder+"."; got != want {
		t.Errorf("mkdir message: got %q, want %q", got, want)
	}
	submit(b, fmt.Sprintf(`tr[data-name=%q] a.dir`, folder), "#upload")
	if got, want := pathOf(t, b), "/_/files/"+folder+"/"; got != want {
		t.Errorf("folder page: got %s, want %s", got, want)
	}
	b.SetFiles("#file", bigFile)
	// Loopback's socket buffers would take the whole file at once, and
	// the bar would stand at 100% while the server holds it: slowed, the
	// bar stops near the server's halfway mark.
	throttleUploads(b, base+"/_/api/files/*", 4<<20)
	mark(b)
	b.Click("#upload")
	select {
	case <-gate.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the upload's PUT did not reach the server (did the upload script run?)")
	}
	// Polling in the page is safe: it cannot reload while the PUT is held.
	progress := evalJS[float64](t, b, `new Promise(ok => {
		const seen = () => { const p = document.querySelector("#progress .upload progress"); return p && p.value > 0 ? p.value : 0; };
		const poll = () => { const v = seen(); if (v) ok(v); else requestAnimationFrame(poll); };
		poll();
	})`, chromedp.EvalAwaitPromise)
	if progress <= 0 || progress > 1 {
		t.Errorf("progress during the upload: got %v, want in (0, 1]", progress)
	}
	t.Logf("progress bar at %.0f%% while the server holds the upload at 50%%", progress*100)
	if got := evalJS[string](t, b, `document.querySelector("#progress .upload").className`); got != "upload" {
		t.Errorf("upload row while the PUT is held: class %q, want %q (neither done nor failed)", got, "upload")
	}
	b.Screenshot("06-upload-progress")
	gate.open()
	waitNewPage(b, "#msg")
	if got, want := b.Text("#msg"), "Uploaded 1 file(s)."; got != want {
		t.Errorf("upload message: got %q, want %q", got, want)
	}
	b.WaitVisible(fmt.Sprintf(`tr[data-name=%q]`, big))
	if got, err := os.ReadFile(filepath.Join(e.dir, "files", folder, big)); err != nil || !bytes.Equal(got, content) {
		t.Errorf("stored file: got %d bytes (%v), want the %d bytes uploaded", len(got), err, len(content))
	}
	b.Screenshot("07-files")

	// 4. The public site: public/index.html, seen by a visitor.
	b.Navigate(base + "/_/files/public/")
	b.WaitVisible(".note")
	b.SetFiles("#file", indexFile)
	submit(b, "#upload", "#msg")
	if got, want := b.Text("#msg"), "Uploaded 1 file(s)."; got != want {
		t.Errorf("upload message in public/: got %q, want %q", got, want)
	}
	if got, err := os.ReadFile(filepath.Join(e.dir, "files", "public", "index.html")); err != nil || !bytes.Equal(got, index) {
		t.Errorf("stored index.html: got %q (%v), want %q", got, err, index)
	}
	visitor := browsertest.New(t, browsertest.Options{})
	visitor.Navigate(base + "/")
	if got, want := visitor.Text("#hello"), "Hello from Alice's cloud"; got != want {
		t.Errorf("public site: got %q, want %q", got, want)
	}
	visitor.Screenshot("08-public-site")

	// 5. A share link to the big file, opened by the visitor.
	b.Navigate(base + "/_/files/" + url.PathEscape(folder) + "/")
	submit(b, fmt.Sprintf(`tr[data-name=%q] a.more`, big), "button.share")
	submit(b, "button.share", "a.link-url")
	if got, want := pathOf(t, b), "/_/shares"; got != want {
		t.Errorf("after share: got %s, want %s", got, want)
	}
	link := evalJS[string](t, b, `document.querySelector("a.link-url").href`)
	if !strings.HasPrefix(link, base+"/s/") {
		t.Fatalf("share link %q, want %s/s/<token>", link, base)
	}
	if got, want := b.Text("#shares tbody tr td:nth-child(2)"), "/"+folder+"/"+big; got != want {
		t.Errorf("share of: got %q, want %q", got, want)
	}
	b.Screenshot("09-shares")
	visitor.Navigate(link)
	if got := evalJS[string](t, visitor, `document.body.textContent`); got != string(content) {
		t.Errorf("shared file in the visitor's browser: got %d bytes, want the %d bytes uploaded", len(got), len(content))
	}
	// The link opens that file only, not the owner's pages.
	visitor.Navigate(base + "/_/files/")
	visitor.WaitVisible("#login")
	if got, want := pathOf(t, visitor), "/_/login"; got != want {
		t.Errorf("visitor at /_/files/: got %s, want %s", got, want)
	}

	// 6. Log out: the owner's pages lead to the login page again.
	submit(b, "#logout", "#login")
	b.Navigate(base + "/_/")
	b.WaitVisible("#login")
	if got, want := pathOf(t, b), "/_/login"; got != want {
		t.Errorf("/_/ after logout: got %s, want %s", got, want)
	}
	b.Screenshot("10-logged-out")

	// 7. No exceptions, console errors or CSP violations on any page. The
	// owner's browser logs the two refusals it was meant to get as failed
	// loads (a form shown again with its error has the error's status):
	// those, and nothing else.
	checkErrors(t, b,
		browsertest.PageError{Kind: "log", Text: "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)", Where: base + "/_/setup:"},
		browsertest.PageError{Kind: "log", Text: "Failed to load resource: the server responded with a status of 401 (Unauthorized)", Where: base + "/_/login:"})
	visitor.CheckNoErrors()
	t.Logf("owner journey took %v", time.Since(start).Round(time.Millisecond))
}

// checkErrors is b.CheckNoErrors for a browser that must have seen the
// page errors want (each once, Where a prefix of the location) and no
// others.
func checkErrors(t testing.TB, b *browsertest.Browser, want ...browsertest.PageError) {
	t.Helper()
	seen := make([]bool, len(want))
next:
	for _, e := range b.Errors() {
		for i, w := range want {
			if !seen[i] && e.Kind == w.Kind && e.Text == w.Text && strings.HasPrefix(e.Where, w.Where) {
				seen[i] = true
				continue next
			}
		}
		t.Errorf("page error: %s", e)
	}
	for i, w := range want {
		if !seen[i] {
			t.Errorf("page error not seen: got none, want %s", w)
		}
	}
}

// throttleUploads limits the upload rate (bytes/s) of b's requests to
// URLs matching pattern (URLPattern syntax).
func throttleUploads(b *browsertest.Browser, pattern string, rate float64) {
	b.Run(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
			MatchedNetworkConditions: []*network.Conditions{{URLPattern: pattern, UploadThroughput: rate, DownloadThroughput: -1}}})
		return err
	}))
}

// submit clicks sel and waits for the next page's want.
func submit(b *browsertest.Browser, sel, want string) {
	mark(b)
	b.Click(sel)
	waitNewPage(b, want)
}

// mark marks the current page as old, so that waitNewPage does not take
// an element of the same name on it for one on the next page.
func mark(b *browsertest.Browser) {
	b.Run(chromedp.Evaluate[chromedp.Void](`document.documentElement.dataset.stale = "1"`))
}

// waitNewPage waits for want on a page loaded after the last mark.
func waitNewPage(b *browsertest.Browser, want string) {
	b.WaitVisible("html:not([data-stale]) " + want)
}

// pathOf is the path (unescaped) of the page b shows.
func pathOf(t testing.TB, b *browsertest.Browser) string {
	t.Helper()
	u, err := url.Parse(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// askedPositions are the 1-based word positions the confirmation step asks
// for, in the order of its inputs #word0..#word2.
func askedPositions(t testing.TB, b *browsertest.Browser) []int {
	t.Helper()
	pos := evalJS[[]int](t, b, `[0, 1, 2].map(i => +document.getElementById("word" + i).dataset.pos)`)
	for _, p := range pos {
		if p < 1 || p > 24 {
			t.Fatalf("confirmation asks for words %v, want positions 1 to 24", pos)
		}
	}
	return pos
}

// evalJS evaluates a JavaScript expression in b's page.
func evalJS[T any](t testing.TB, b *browsertest.Browser, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluate %.60q: %v", expr, err)
	}
	return v
}

// uploadGate holds the body of one PUT to path after hold bytes until
// open is called, so a test can look at the page mid-upload.
type uploadGate struct {
	path    string // unescaped request path
	hold    int64
	held    chan struct{} // closed when the server has read hold bytes
	release chan struct{}

	heldOnce, openOnce sync.Once
}

func (g *uploadGate) open() { g.openOnce.Do(func() { close(g.release) }) }

func (g *uploadGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == g.path {
			r.Body = &heldBody{ReadCloser: r.Body, g: g, ctx: r.Context()}
		}
		h.ServeHTTP(w, r)
	})
}

type heldBody struct {
	io.ReadCloser
	g      *uploadGate
	ctx    context.Context
	n      int64
	passed bool
}

func (b *heldBody) Read(p []byte) (int, error) {
	if !b.passed && b.n >= b.g.hold {
		b.g.heldOnce.Do(func() { close(b.g.held) })
		select {
		case <-b.g.release:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
		b.passed = true
	}
	if !b.passed && int64(len(p)) > b.g.hold-b.n {
		p = p[:b.g.hold-b.n]
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
