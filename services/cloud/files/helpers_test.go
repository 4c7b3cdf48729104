package files

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pc2/pc2/internal/testing/testlog"
)

func testLogger(t testing.TB) *slog.Logger {
	return testlog.New(t, slog.LevelDebug)
}

// newStore opens a store in a temp dir, closed in Cleanup.
func newStore(t testing.TB, quota int64) *Store {
	t.Helper()
	return openStore(t, t.TempDir(), quota)
}

func openStore(t testing.TB, dir string, quota int64) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Quota: quota, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// put writes content to p through an Upload.
func put(t testing.TB, s *Store, p, content string) {
	t.Helper()
	u, err := s.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(u, content); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
}

// get reads p through the Store.
func get(t testing.TB, s *Store, p string) string {
	t.Helper()
	f, err := s.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustNotExist fails if p (a real path) exists.
func mustNotExist(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (err %v), want it absent", p, err)
	}
}

// mustContain fails unless the real file p holds want.
func mustContain(t testing.TB, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s holds %q (%d bytes), want %q", p, b[:min(len(b), 40)], len(b), want)
	}
}

// temps lists the temp files of uploads in the store at dir.
func temps(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, TempDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// raw sends one request exactly as written (no client-side cleaning or
// escaping of the target) and returns the status and body.
func raw(t testing.TB, addr, method, target string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n")
	for k, v := range hdr {
		b.WriteString(k + ": " + v + "\r\n")
	}
	if _, chunked := hdr["Transfer-Encoding"]; !chunked && (body != "" || method == "PUT") {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(rb)
}
