package caddybench

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReverseProxy: a GET through Caddy reaches the upstream with the
// client's Host and an X-Forwarded-For.
func TestReverseProxy(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s xff=%s", r.Host, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(web.Close)
	p := ReverseProxy(t, web.Listener.Addr().String())

	req, _ := http.NewRequest("GET", "http://"+p.Addr+"/hi", nil)
	req.Host = "app.example.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := "hello app.example.test /hi xff=127.0.0.1"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}
