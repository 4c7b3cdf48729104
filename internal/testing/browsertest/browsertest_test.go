package browsertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const formPage = `<!doctype html>
<html><head><title>upload</title></head><body>
<h1>Upload</h1>
<p id="status">loading</p>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input id="name" name="name" autocomplete="off">
  <input id="file" name="file" type="file">
  <button id="send" type="submit">Send</button>
</form>
<p id="echo"></p>
<div style="height: 1500px; background: linear-gradient(#fff, #9cf)">taller than the window</div>
<script>
document.getElementById("status").textContent = "ready";
document.getElementById("name").addEventListener("input", e => {
  document.getElementById("echo").textContent = "hello " + e.target.value;
});
</script>
</body></html>`

const throwPage = `<!doctype html>
<html><body><p id="x">throws</p>
<script>
console.error("console says", 42);
throw new Error("boom from the page");
</script>
</body></html>`

// testServer serves the form, checks that an upload carries want, and
// answers /api for Fetch.
func testServer(t *testing.T, want []byte) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, formPage)
	})
	mux.HandleFunc("GET /throw", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, throwPage)
	})
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"user":"alice"}`)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		f, hdr, err := r.FormFile("file")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer f.Close()
		got, err := io.ReadAll(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		verdict := "match"
		if !bytes.Equal(got, want) {
			verdict = fmt.Sprintf("MISMATCH: got %d bytes, want %d", len(got), len(want))
		}
		fmt.Fprintf(w, `<!doctype html><p id="result">%s sent %s, %d bytes: %s</p>`,
			html.EscapeString(r.FormValue("name")), html.EscapeString(hdr.Filename), len(got), verdict)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFormUploadScreenshot(t *testing.T) {
	content := make([]byte, 300<<10)
	rand.Read(content)
	srv := testServer(t, content)
	file := filepath.Join(t.TempDir(), "photo.bin")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	artifacts, err := ArtifactsDir()
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	b := New(t, Options{})
	b.Navigate(srv.URL)
	b.WaitVisible("#name")
	t.Logf("browser start + first page load: %v", time.Since(start).Round(time.Millisecond))

	if got, want := b.Text("#status"), "ready"; got != want {
		t.Errorf("status: got %q, want %q (did the page's script run?)", got, want)
	}
	b.Type("#name", "alice")
	if got, want := b.Text("#echo"), "hello alice"; got != want {
		t.Errorf("echo: got %q, want %q", got, want)
	}

	shot := b.Screenshot("form")
	if want := filepath.Join(artifacts, "screenshots", "TestFormUploadScreenshot", "form.png"); shot != want {
		t.Errorf("screenshot path: got %s, want %s", shot, want)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("decode %s: %v", shot, err)
	}
	// Full page: the page is taller than the 1280x900 viewport.
	if got := img.Bounds().Size(); got.X != 1280 || got.Y < 1500 {
		t.Errorf("screenshot size: got %v, want 1280 wide, at least 1500 high", got)
	}

	b.SetFiles("#file", file)
	b.Click("#send")
	b.WaitVisible("#result")
	if got, want := b.Text("#result"), "alice sent photo.bin, 307200 bytes: match"; got != want {
		t.Errorf("upload result: got %q, want %q", got, want)
	}
	if got, want := b.URL(), srv.URL+"/upload"; got != want {
		t.Errorf("URL after submit: got %s, want %s", got, want)
	}

	status, body := b.Fetch("/api")
	if status != 200 || body != `{"user":"alice"}` {
		t.Errorf("fetch /api: got %d %q, want 200 {\"user\":\"alice\"}", status, body)
	}

	b.CheckNoErrors()
}

func TestPageErrorsCollected(t *testing.T) {
	srv := testServer(t, nil)
	b := New(t, Options{})
	b.Navigate(srv.URL + "/throw")
	b.WaitVisible("#x")

	var exception, console bool
	for _, e := range b.Errors() {
		switch {
		case e.Kind == "exception" && strings.Contains(e.Text, "boom from the page"):
			exception = true
			if !strings.HasSuffix(e.Where, "/throw:5") {
				t.Errorf("exception location: got %q, want .../throw:5", e.Where)
			}
		case e.Kind == "console" && e.Text == "console says 42":
			console = true
		}
	}
	if !exception || !console {
		t.Errorf("errors: got %v, want the uncaught exception and the console.error", b.Errors())
	}
}

// TestHostRulesTLS reaches a TLS server by a made-up name, as the tests of
// the gateway reach alice.pc2.test, and checks other names do not resolve.
func TestHostRulesTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><p id="host">%s</p>`, html.EscapeString(r.Host))
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	b := New(t, Options{HostRules: []string{"MAP *.pc2.test 127.0.0.1"}, IgnoreCertErrors: true})
	want := "alice.pc2.test:" + u.Port()
	b.Navigate("https://" + want + "/")
	if got := b.Text("#host"); got != want {
		t.Errorf("Host seen by the server: got %q, want %q", got, want)
	}

	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	err = chromedp.Do(ctx, chromedp.Navigate("http://example.com/"))
	if err == nil || !strings.Contains(err.Error(), "ERR_NAME_NOT_RESOLVED") {
		t.Errorf("navigate to an unmapped name: got %v, want ERR_NAME_NOT_RESOLVED", err)
	}
}

func TestSafePath(t *testing.T) {
	for in, want := range map[string]string{
		"TestA":            "TestA",
		"TestA/sub_case#1": filepath.Join("TestA", "sub_case_1"),
		"TestA/..":         filepath.Join("TestA", "_.."),
		"TestA/a b:c":      filepath.Join("TestA", "a_b_c"),
	} {
		if got := safePath(in); got != want {
			t.Errorf("safePath(%q): got %q, want %q", in, got, want)
		}
	}
}

func TestArtifactsDir(t *testing.T) {
	t.Setenv("PC2_ARTIFACTS", "")
	dir, err := ArtifactsDir()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "artifacts" {
		t.Errorf("ArtifactsDir: got %s, want <repo root>/artifacts", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "go.mod")); err != nil {
		t.Errorf("ArtifactsDir %s is not beside go.mod: %v", dir, err)
	}
	t.Setenv("PC2_ARTIFACTS", "/elsewhere")
	if dir, err := ArtifactsDir(); dir != "/elsewhere" || err != nil {
		t.Errorf("ArtifactsDir with PC2_ARTIFACTS=/elsewhere: got %s, %v", dir, err)
	}
}
