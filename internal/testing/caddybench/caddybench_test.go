package caddybench

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/tlstest"
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

// TestReverseProxyTLS: an HTTPS GET through Caddy gets the certificate
// it was given and reaches the upstream.
func TestReverseProxyTLS(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(web.Close)
	cert, roots := tlstest.SelfSigned(t, "app.example.test")
	der := cert.Certificate[0]
	key := cert.PrivateKey.(*ecdsa.PrivateKey)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	p := ReverseProxyTLS(t, web.Listener.Addr().String(), certFile, keyFile)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: "app.example.test", RootCAs: roots}}}
	req, _ := http.NewRequest("GET", "https://"+p.Addr+"/", nil)
	req.Host = "app.example.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := "hello app.example.test https"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}
