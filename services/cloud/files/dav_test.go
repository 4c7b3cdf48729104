package files

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// serveDAV serves s.DAV at /dav/ on loopback and returns the address.
// No ServeMux: it would clean ".." out of paths before DAV sees them.
func serveDAV(t testing.TB, s *Store) string {
	t.Helper()
	srv := httptest.NewServer(s.DAV("/dav/"))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// stream sends a request head and then body, concurrently reading the
// response: a server that gives up on a body answers before it is sent.
func stream(t testing.TB, addr, head string, body io.Reader) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		io.WriteString(c, head)
		io.Copy(c, body)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", strings.SplitN(head, "\r\n", 2)[0], err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDAVEscape(t *testing.T) {
	f := newEscapeFixture(t)
	addr := serveDAV(t, f.s)
	refused := func(method, target string, hdr map[string]string, body string) {
		t.Helper()
		code, got := raw(t, addr, method, target, hdr, body)
		if code < 400 {
			t.Errorf("%s %s %v: %d, want an error", method, target, hdr, code)
		}
		if strings.Contains(got, secret) || strings.Contains(got, "root:") {
			t.Errorf("%s %s: leaked %q", method, target, got)
		}
	}
	if code, got := raw(t, addr, "GET", "/dav/in-file", nil, ""); code != 200 || got != "inside" {
		t.Errorf("GET through a link inside: %d %q", code, got)
	}

	escapes := []string{
		"/dav/evil-dir/secret", "/dav/evil-rel/secret", "/dav/evil-file", "/dav/evil-etc/passwd",
		"/dav/../outside/secret", "/dav/%2e%2e/outside/secret", "/dav/%2E%2E/%2e%2e/etc/passwd",
		"/dav/sub/%2e%2e/%2e%2e/outside/secret", "/dav/sub%2f..%2f..%2foutside%2fsecret",
		"/dav/..%2foutside%2fsecret", "/dav/..%5coutside%5csecret", "/dav/" + TempDir + "/",
		"/dav" + f.outside + "/secret", // absolute: a path in the root, which has none
	}
	for _, p := range escapes {
		refused("GET", p, nil, "")
		refused("PROPFIND", p, map[string]string{"Depth": "0"}, "")
		refused("DELETE", p, nil, "")
	}
	writes := []string{
		"/dav/evil-dir/new", "/dav/evil-rel/new", "/dav/evil-file", "/dav/evil-dir/secret",
		"/dav/%2e%2e/outside/new", "/dav/sub/..%2f..%2foutside%2fnew", "/dav/" + TempDir + "/new",
	}
	for _, p := range writes {
		refused("PUT", p, nil, "pwned")
		refused("MKCOL", p, nil, "")
		refused("PROPPATCH", p, nil, `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:x">1</x></D:prop></D:set></D:propertyupdate>`)
	}
	refused("MKCOL", "/dav/"+TempDir, nil, "")

	// MOVE and COPY with a destination out of the root, or through a link.
	dests := []string{
		"http://" + addr + "/dav/evil-dir/f", "http://" + addr + "/dav/evil-rel/f",
		"http://" + addr + "/dav/evil-file", "http://" + addr + "/dav/../outside/f",
		"http://" + addr + "/dav/%2e%2e/outside/f", "http://" + addr + "/dav/sub%2f..%2f..%2foutside%2ff",
		"http://" + addr + "/outside/f", "/dav/../outside/f", "/dav/%2e%2e/%2e%2e" + f.outside + "/f",
		"http://" + addr + "/dav/" + TempDir + "/f", "http://elsewhere.example/dav/f",
	}
	for _, d := range dests {
		for _, ow := range []string{"T", "F"} {
			hdr := map[string]string{"Destination": d, "Overwrite": ow}
			refused("COPY", "/dav/f", hdr, "")
			refused("MOVE", "/dav/f", hdr, "")
		}
	}
	for _, m := range []string{"COPY", "MOVE"} {
		refused(m, "/dav/evil-dir/secret", map[string]string{"Destination": "/dav/stolen"}, "")
		refused(m, "/dav/%2e%2e/outside/secret", map[string]string{"Destination": "/dav/stolen"}, "")
	}
	refused("COPY", "/dav/evil-dir", map[string]string{"Destination": "/dav/stolen"}, "")
	mustNotExist(t, filepath.Join(f.root, "stolen"))
	if got := get(t, f.s, "f"); got != "mine" {
		t.Errorf("f = %q after refused moves", got)
	}

	// Listings show neither escaping links nor the temp dir.
	for _, depth := range []string{"1", "infinity"} {
		code, body := raw(t, addr, "PROPFIND", "/dav/", map[string]string{"Depth": depth}, "")
		if code != 207 {
			t.Fatalf("PROPFIND Depth %s: %d", depth, code)
		}
		for _, hidden := range []string{"evil-", TempDir, "outside", "secret"} {
			if strings.Contains(body, hidden) {
				t.Errorf("PROPFIND Depth %s lists %q:\n%s", depth, hidden, body)
			}
		}
		for _, shown := range []string{"/dav/sub/", "/dav/in-file", "/dav/f<"} {
			if !strings.Contains(body, shown) {
				t.Errorf("PROPFIND Depth %s does not list %q:\n%s", depth, shown, body)
			}
		}
	}
	// Over WebDAV an escaping link is not there at all.
	if code, _ := raw(t, addr, "DELETE", "/dav/evil-dir", nil, ""); code != http.StatusNotFound {
		t.Errorf("DELETE escaping link: %d, want 404", code)
	}
	f.intact(t)
}

func TestDAVPut(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 1000)
	addr := serveDAV(t, s)
	if code, _ := raw(t, addr, "PUT", "/dav/a", nil, strings.Repeat("a", 600)); code != http.StatusCreated {
		t.Fatalf("PUT: %d", code)
	}
	if code, got := raw(t, addr, "GET", "/dav/a", nil, ""); code != 200 || got != strings.Repeat("a", 600) {
		t.Errorf("GET: %d, %d bytes", code, len(got))
	}
	if code, _ := raw(t, addr, "PUT", "/dav/none/a", nil, "x"); code != http.StatusConflict {
		t.Errorf("PUT without parent: %d, want 409", code)
	}
	// Over the quota: by Content-Length, before the body is sent; by the
	// bytes of a chunked body; by a COPY.
	if code, _ := raw(t, addr, "PUT", "/dav/b", nil, strings.Repeat("b", 500)); code != http.StatusInsufficientStorage {
		t.Errorf("PUT over quota: %d, want 507", code)
	}
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 500, strings.Repeat("b", 500))
	if code, _ := raw(t, addr, "PUT", "/dav/b", map[string]string{"Transfer-Encoding": "chunked"}, chunk); code != http.StatusInsufficientStorage {
		t.Errorf("chunked PUT over quota: %d, want 507", code)
	}
	if code, _ := raw(t, addr, "COPY", "/dav/a", map[string]string{"Destination": "/dav/b"}, ""); code != http.StatusInsufficientStorage {
		t.Errorf("COPY over quota: %d, want 507", code)
	}
	mustNotExist(t, filepath.Join(dir, "b"))
	if u, _ := s.Usage(); u.Used != 600 {
		t.Errorf("Used = %d, want 600", u.Used)
	}
	// Overwrite, then MOVE keeps the count.
	if code, _ := raw(t, addr, "PUT", "/dav/a", nil, "short"); code != http.StatusCreated {
		t.Errorf("overwrite: %d", code)
	}
	if code, _ := raw(t, addr, "MOVE", "/dav/a", map[string]string{"Destination": "/dav/c"}, ""); code != http.StatusCreated {
		t.Errorf("MOVE: %d", code)
	}
	if u, _ := s.Usage(); u.Used != 5 {
		t.Errorf("Used = %d, want 5", u.Used)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("left over: %v", left)
	}

	// The ETag of the PUT is the one the file keeps.
	req, _ := http.NewRequest("PUT", "http://"+addr+"/dav/e", strings.NewReader("etag"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	head, err := http.Head("http://" + addr + "/dav/e")
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if put, got := resp.Header.Get("ETag"), head.Header.Get("ETag"); put == "" || put != got {
		t.Errorf("ETag of PUT %q, of HEAD %q", put, got)
	}
}

// TestDAVPutDisconnect: a client that goes away in the middle of a PUT
// leaves no file, or the old content, not a truncated one.
func TestDAVPutDisconnect(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	put(t, s, "old", "old content")
	addr := serveDAV(t, s)
	for _, p := range []string{"new", "old"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "PUT /dav/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", p, addr, 1<<20)
		c.Write(make([]byte, 300<<10))
		testenv.WaitFor(t, 10*time.Second, "the upload to start", func() bool { return len(temps(t, dir)) == 1 })
		c.Close()
		testenv.WaitFor(t, 10*time.Second, "the upload to end", func() bool { return len(temps(t, dir)) == 0 })
	}
	mustNotExist(t, filepath.Join(dir, "new"))
	mustContain(t, filepath.Join(dir, "old"), "old content")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != 0 || s.used != int64(len("old content")) {
		t.Errorf("inflight %d, used %d after aborted uploads", s.inflight, s.used)
	}
}

// TestDAVDeadProps: dead properties follow a file through MOVE and COPY.
func TestDAVDeadProps(t *testing.T) {
	s := newStore(t, 0)
	addr := serveDAV(t, s)
	raw(t, addr, "PUT", "/dav/a", nil, "a")
	const set = `<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><z:color xmlns:z="urn:pc2">teal</z:color></D:prop></D:set></D:propertyupdate>`
	if code, body := raw(t, addr, "PROPPATCH", "/dav/a", nil, set); code != 207 || !strings.Contains(body, "200 OK") {
		t.Fatalf("PROPPATCH: %d %s", code, body)
	}
	raw(t, addr, "MOVE", "/dav/a", map[string]string{"Destination": "/dav/b"}, "")
	raw(t, addr, "COPY", "/dav/b", map[string]string{"Destination": "/dav/c"}, "")
	for _, p := range []string{"/dav/b", "/dav/c"} {
		code, body := raw(t, addr, "PROPFIND", p, map[string]string{"Depth": "0"}, "")
		if code != 207 || !strings.Contains(body, "teal") {
			t.Errorf("PROPFIND %s: %d, no teal in %s", p, code, body)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, "c")); err != nil {
		t.Fatal(err)
	}
}
