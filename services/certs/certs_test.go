package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/pc2/pc2/internal/testing/pebbletest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/testlog"
)

// The domain of the certificate tests.
const certsDomain = "pc2.test"

// acmeEnv is a Pebble CA on loopback and the two listeners its VA
// validates on: HTTP-01 on httpLn, TLS-ALPN-01 on tlsLn.
type acmeEnv struct {
	t      *testing.T
	pebble *pebbletest.Server
	roots  *x509.CertPool // Pebble's issuing roots
	httpLn net.Listener
	tlsLn  net.Listener
	dir    string // certificate storage

	mu        sync.Mutex
	asked     []string       // names the Allow func was asked about
	challenge map[string]int // HTTP-01 requests by status
}

func newACMEEnv(t *testing.T) *acmeEnv {
	e := &acmeEnv{t: t, httpLn: loopbackListener(t), tlsLn: loopbackListener(t), dir: t.TempDir(), challenge: map[string]int{}}
	e.pebble = pebbletest.Start(t, pebbletest.Options{HTTPPort: port(e.httpLn), TLSPort: port(e.tlsLn)})
	roots, err := e.pebble.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	e.roots = roots
	return e
}

func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// config is a Config for e's CA whose Allow admits names in
// registered.
func (e *acmeEnv) config(registered ...string) Config {
	return Config{
		CA:          e.pebble.DirectoryURL,
		CARoots:     e.pebble.ClientRoots,
		Email:       "operator@" + certsDomain,
		Dir:         e.dir,
		HTTPPort:    port(e.httpLn),
		TLSALPNPort: port(e.tlsLn),
		Logger:      testlog.New(e.t, slog.LevelDebug),
		Allow: func(_ context.Context, name string) error {
			e.mu.Lock()
			e.asked = append(e.asked, name)
			e.mu.Unlock()
			if slices.Contains(registered, name) {
				return nil
			}
			return errors.New("not registered")
		},
	}
}

func (e *acmeEnv) wasAsked(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.asked, name)
}

// newCerts starts a Manager for cfg.
func newCerts(t *testing.T, cfg Config) *Manager {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// serve runs c the way the gateway does: HTTPHandler on httpLn (counting
// the HTTP-01 requests it answers) and a small HTTPS site with
// TLSConfig on tlsLn. The returned func stops both.
func (e *acmeEnv) serve(c *Manager, httpLn, tlsLn net.Listener) func() {
	plain := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		c.HTTPHandler(nil).ServeHTTP(rec, r)
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			e.mu.Lock()
			e.challenge[strconv.Itoa(rec.Code)]++
			e.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})}
	secure := &http.Server{
		TLSConfig: c.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s over %s", r.Host, r.Proto)
		}),
		ErrorLog: slog.NewLogLogger(testlog.New(e.t, slog.LevelDebug).Handler(), slog.LevelDebug),
	}
	go plain.Serve(httpLn)
	go secure.ServeTLS(tlsLn, "", "")
	var once sync.Once
	stop := func() {
		once.Do(func() {
			plain.Close()
			secure.Close()
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// httpsGet fetches https://name/path from addr, trusting roots.
func httpsGet(t *testing.T, addr, name, path string, roots *x509.CertPool) string {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get("https://" + name + path)
	if err != nil {
		t.Fatalf("GET https://%s%s: %v", name, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET https://%s%s: got %s %q, want 200", name, path, resp.Status, body)
	}
	return string(body)
}

// storedFor lists the files under dir whose path mentions name.
func storedFor(t *testing.T, dir, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, name) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func wantNames(t *testing.T, leaf *x509.Certificate, want ...string) {
	t.Helper()
	if !slices.Equal(leaf.DNSNames, want) {
		t.Fatalf("certificate for %v, want %v", leaf.DNSNames, want)
	}
}

// onDemand serves a Manager for a registered name (edited by edit) and
// checks that its first handshake gets a certificate for it.
func onDemand(t *testing.T, name string, edit func(*Config)) *acmeEnv {
	t.Helper()
	e := newACMEEnv(t)
	if err := e.pebble.AddA(name, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(name)
	edit(&cfg)
	c := newCerts(t, cfg)
	e.serve(c, e.httpLn, e.tlsLn)
	leaf, err := pebbletest.Leaf(e.tlsLn.Addr().String(), name, e.roots)
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	wantNames(t, leaf, name)
	return e
}

// A registered name gets a certificate in its first handshake, proven
// through HTTP-01 on the HTTP handler; the certificate chains to
// Pebble's root and serves HTTPS (HTTP/2).
func TestOnDemandHTTP01(t *testing.T) {
	name := "alice." + certsDomain
	e := onDemand(t, name, func(cfg *Config) { cfg.DisableTLSALPN01 = true })
	if got := e.pebble.Orders(); got != 1 {
		t.Errorf("got %d orders, want 1", got)
	}
	e.mu.Lock()
	served := e.challenge["200"]
	e.mu.Unlock()
	if served == 0 {
		t.Errorf("the HTTP handler answered no HTTP-01 challenge (requests by status: %v)", e.challenge)
	}
	if got, want := httpsGet(t, e.tlsLn.Addr().String(), name, "/hi", e.roots), "hello "+name+" over HTTP/2.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := e.pebble.Orders(); got != 1 {
		t.Errorf("got %d orders after the second connection, want 1", got)
	}
}

// The same with TLS-ALPN-01 on the HTTPS listener.
func TestOnDemandTLSALPN01(t *testing.T) {
	e := onDemand(t, "carol."+certsDomain, func(cfg *Config) { cfg.DisableHTTP01 = true })
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.challenge) != 0 {
		t.Errorf("HTTP-01 requests %v with HTTP-01 off", e.challenge)
	}
}

// A name Allow refuses gets no certificate and no order, even though
// the CA could validate it.
func TestUnregisteredName(t *testing.T) {
	e := newACMEEnv(t)
	name := "mallory." + certsDomain
	if err := e.pebble.AddA(name, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	c := newCerts(t, e.config("alice."+certsDomain))
	e.serve(c, e.httpLn, e.tlsLn)

	if leaf, err := pebbletest.Leaf(e.tlsLn.Addr().String(), name, e.roots); err == nil {
		t.Fatalf("handshake for %s succeeded with a certificate for %v; want a failure", name, leaf.DNSNames)
	}
	if !e.wasAsked(name) {
		t.Errorf("Allow was not asked about %s", name)
	}
	if got := e.pebble.Orders(); got != 0 {
		t.Errorf("got %d orders, want 0", got)
	}
	if f := storedFor(t, e.dir, "mallory"); len(f) != 0 {
		t.Errorf("storage has %v, want nothing for %s", f, name)
	}
}

// TestCertsOrderLimit (issue 16, finding 5): names that Allow accepts
// (anyone's claims, under an open policy) order certificates only within
// OrdersPerWeek, so a squatter cannot use up the CA's limit for the
// domain; certificates already obtained keep being served.
func TestOrderLimit(t *testing.T) {
	e := newACMEEnv(t)
	names := []string{"one." + certsDomain, "two." + certsDomain, "three." + certsDomain}
	for _, n := range names {
		if err := e.pebble.AddA(n, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.config(names...)
	cfg.OrdersPerWeek = 10 // two at once
	c := newCerts(t, cfg)
	e.serve(c, e.httpLn, e.tlsLn)
	for _, n := range names[:2] {
		if _, err := pebbletest.Leaf(e.tlsLn.Addr().String(), n, e.roots); err != nil {
			t.Fatalf("handshake for %s within the limit: %v", n, err)
		}
	}
	if _, err := pebbletest.Leaf(e.tlsLn.Addr().String(), names[2], e.roots); err == nil {
		t.Fatalf("handshake for %s past the order limit got a certificate", names[2])
	}
	if got := e.pebble.Orders(); got != 2 {
		t.Errorf("got %d orders, want 2", got)
	}
	if leaf, err := pebbletest.Leaf(e.tlsLn.Addr().String(), names[0], e.roots); err != nil {
		t.Fatalf("a name with a certificate after the limit: %v", err)
	} else {
		wantNames(t, leaf, names[0])
	}
}

// A certificate in storage is served by a new Manager (a restart) while
// the CA is down.
func TestPersist(t *testing.T) {
	e := newACMEEnv(t)
	name := "dave." + certsDomain
	if err := e.pebble.AddA(name, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	c1 := newCerts(t, e.config(name))
	stop := e.serve(c1, e.httpLn, e.tlsLn)
	first, err := pebbletest.Leaf(e.tlsLn.Addr().String(), name, e.roots)
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	stop()
	c1.Close()
	orders := e.pebble.Orders()
	e.pebble.Stop()

	c2 := newCerts(t, e.config(name))
	ln := loopbackListener(t)
	e.serve(c2, loopbackListener(t), ln)
	again, err := pebbletest.Leaf(ln.Addr().String(), name, e.roots)
	if err != nil {
		t.Fatalf("handshake for %s after the restart: %v", name, err)
	}
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("got certificate %x after the restart, want the stored %x", again.SerialNumber, first.SerialNumber)
	}
	if orders != 1 {
		t.Errorf("got %d orders, want 1", orders)
	}
}

// httpreqEndpoint is an operator's httpreq endpoint in front of
// challtestsrv's DNS. challtestsrv can only clear all of a name's TXT
// records, so cleanup clears them and puts back the others (the
// wildcard's and the apex's challenges share _acme-challenge.<domain>).
type httpreqEndpoint struct {
	pebble *pebbletest.Server
	mu     sync.Mutex
	txt    map[string][]string
	calls  map[string]int
}

func (h *httpreqEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != "acme" || p != "secret" {
		http.Error(w, "who are you?", http.StatusUnauthorized)
		return
	}
	var req struct{ FQDN, Value string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.FQDN == "" || req.Value == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[r.URL.Path]++
	var err error
	switch r.URL.Path {
	case "/dns/present":
		h.txt[req.FQDN] = append(h.txt[req.FQDN], req.Value)
		err = h.pebble.SetTXT(req.FQDN, req.Value)
	case "/dns/cleanup":
		h.txt[req.FQDN] = slices.DeleteFunc(h.txt[req.FQDN], func(v string) bool { return v == req.Value })
		err = h.pebble.ClearTXT(req.FQDN)
		for _, v := range h.txt[req.FQDN] {
			if err == nil {
				err = h.pebble.SetTXT(req.FQDN, v)
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
}

// wildcardTest gets *.pc2.test and pc2.test through DNS-01 with dnsCfg,
// then serves names from them without new orders, also after a restart
// with the CA down.
func wildcardTest(t *testing.T, e *acmeEnv, dnsCfg *DNSConfig) {
	dnsCfg.Zones = []string{certsDomain}
	dnsCfg.Resolvers = []string{e.pebble.DNSAddr}
	cfg := e.config() // Allow refuses everything: nothing is on demand
	cfg.DNS = dnsCfg
	c := newCerts(t, cfg)
	stop := e.serve(c, e.httpLn, e.tlsLn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Manage(ctx, []string{certsDomain}); err != nil {
		t.Fatal(err)
	}
	if got := e.pebble.Orders(); got != 2 {
		t.Errorf("got %d orders, want 2 (wildcard and apex)", got)
	}

	addr := e.tlsLn.Addr().String()
	leaf, err := pebbletest.Leaf(addr, "bob."+certsDomain, e.roots)
	if err != nil {
		t.Fatalf("handshake for bob: %v", err)
	}
	wantNames(t, leaf, "*."+certsDomain)
	if leaf, err = pebbletest.Leaf(addr, certsDomain, e.roots); err != nil {
		t.Fatalf("handshake for the apex: %v", err)
	}
	wantNames(t, leaf, certsDomain)
	if got, want := httpsGet(t, addr, "bob."+certsDomain, "/", e.roots), "hello bob."+certsDomain+" over HTTP/2.0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := e.pebble.Orders(); got != 2 {
		t.Errorf("got %d orders after the handshakes, want still 2", got)
	}
	if e.wasAsked("bob." + certsDomain) {
		t.Error("Allow was asked about bob with DNS-01 configured")
	}

	// A restart loads both from storage; the CA is gone.
	stop()
	c.Close()
	e.pebble.Stop()
	c2 := newCerts(t, cfg)
	ln := loopbackListener(t)
	e.serve(c2, loopbackListener(t), ln)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c2.Manage(ctx, []string{certsDomain}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if leaf, err := pebbletest.Leaf(ln.Addr().String(), "erin."+certsDomain, e.roots); err != nil {
		t.Fatalf("handshake for erin after the restart: %v", err)
	} else {
		wantNames(t, leaf, "*."+certsDomain)
	}
}

func TestWildcardHTTPReq(t *testing.T) {
	e := newACMEEnv(t)
	h := &httpreqEndpoint{pebble: e.pebble, txt: map[string][]string{}, calls: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle("/dns/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	wildcardTest(t, e, &DNSConfig{Provider: DNSHTTPReq, Endpoint: srv.URL + "/dns/", Username: "acme", Password: "secret"})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.calls["/dns/present"] != 2 || h.calls["/dns/cleanup"] != 2 {
		t.Errorf("got endpoint calls %v, want 2 presents and 2 cleanups", h.calls)
	}
}

// rfc2136Server is a primary taking TSIG-signed dynamic updates and
// applying their TXT records to challtestsrv.
type rfc2136Server struct {
	pebble  *pebbletest.Server
	mu      sync.Mutex
	txt     map[string][]string
	updates int
}

func (s *rfc2136Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if r.Opcode != dns.OpcodeUpdate || r.IsTsig() == nil || w.TsigStatus() != nil {
		m.Rcode = dns.RcodeRefused
		w.WriteMsg(m)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates++
	var err error
	for _, rr := range r.Ns {
		t, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		name, value := t.Hdr.Name, strings.Join(t.Txt, "")
		switch t.Hdr.Class {
		case dns.ClassINET: // add
			s.txt[name] = append(s.txt[name], value)
			err = errors.Join(err, s.pebble.SetTXT(name, value))
		case dns.ClassNONE: // delete this record
			// Pebble's DNS clears a name's values only all at once:
			// clearing and adding back the others left a moment with
			// none, in which the CA looked up the wildcard's challenge
			// while the apex's was cleaned up (a CI failure). Values of
			// finished challenges stay until the last one goes.
			s.txt[name] = slices.DeleteFunc(s.txt[name], func(v string) bool { return v == value })
			if len(s.txt[name]) == 0 {
				err = errors.Join(err, s.pebble.ClearTXT(name))
			}
		}
	}
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
	}
	m.SetTsig(r.IsTsig().Hdr.Name, dns.HmacSHA256, 300, time.Now().Unix())
	w.WriteMsg(m)
}

func TestWildcardRFC2136(t *testing.T) {
	e := newACMEEnv(t)
	const keyName, secret = "acme-key.", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	s := &rfc2136Server{pebble: e.pebble, txt: map[string][]string{}}
	ln := loopbackListener(t)
	srv := &dns.Server{Listener: ln, Handler: s, TsigSecret: map[string]string{keyName: secret},
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }} // the default refuses updates
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })

	wildcardTest(t, e, &DNSConfig{Provider: DNSRFC2136, Server: ln.Addr().String(), KeyName: keyName, Key: secret})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.updates != 4 {
		t.Errorf("got %d updates, want 4 (two records added and removed)", s.updates)
	}

	// A wrong key is refused, and the error says so.
	bad, err := newDNSSolver(&DNSConfig{Provider: DNSRFC2136, Server: ln.Addr().String(), KeyName: keyName, Key: "d3Jvbmc=", Zones: []string{certsDomain}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := libdns.TXT{Name: "_acme-challenge", TTL: time.Minute, Text: "forged"}
	_, err = bad.provider.AppendRecords(ctx, certsDomain+".", []libdns.Record{rec})
	if err == nil {
		t.Fatal("an update signed with the wrong key was accepted")
	}
	t.Logf("wrong key: %v", err)
}

// Port 80: challenges are answered (see TestCertsOnDemandHTTP01),
// unknown tokens get 404, everything else a 308 to HTTPS.
func TestHTTPHandler(t *testing.T) {
	c := newCerts(t, Config{Dir: t.TempDir(), Allow: func(context.Context, string) error { return nil }})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	h := c.HTTPHandler(next)
	for _, tc := range []struct {
		method, host, target string
		code                 int
		location             string
	}{
		{"GET", "alice.pc2.test", "/photos/2026?sort=date", http.StatusPermanentRedirect, "https://alice.pc2.test/photos/2026?sort=date"},
		{"POST", "Alice.PC2.test:80", "/upload", http.StatusPermanentRedirect, "https://alice.pc2.test/upload"},
		{"GET", "pc2.test", "/", http.StatusPermanentRedirect, "https://pc2.test/"},
		{"GET", "alice.pc2.test", "/.well-known/acme-challenge/Zm9vYmFy", http.StatusNotFound, ""},
		{"GET", "192.0.2.7", "/", http.StatusTeapot, ""},
		{"GET", "[2001:db8::1]:80", "/", http.StatusTeapot, ""},
	} {
		r := httptest.NewRequest(tc.method, "http://example.invalid"+tc.target, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code || w.Header().Get("Location") != tc.location {
			t.Errorf("%s http://%s%s: got %d %q, want %d %q", tc.method, tc.host, tc.target, w.Code, w.Header().Get("Location"), tc.code, tc.location)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []Config{
		{Allow: func(context.Context, string) error { return nil }}, // no Dir
		{Dir: dir}, // neither Allow nor DNS
		{Dir: dir, DNS: &DNSConfig{Provider: "route53"}},
		{Dir: dir, DNS: &DNSConfig{Provider: DNSRFC2136, Server: "ns1.pc2.test"}},
		{Dir: dir, DNS: &DNSConfig{Provider: DNSHTTPReq, Endpoint: "ftp://dns.pc2.test"}},
	} {
		if c, err := New(cfg); err == nil {
			c.Close()
			t.Errorf("New(%+v) succeeded; want an error", cfg)
		}
	}
}

// TestKeep (a node's own name): Keep obtains the certificate ahead,
// through TLS-ALPN-01 answered by TLSConfig on a listener of the
// caller's (certmagic's own challenge listener is on another loopback
// port, as on a node); State says it is held, by whom and until when,
// and Ordering is true only while the order runs. The certificate,
// short-lived here, is renewed before it ends and the new one served;
// Drop lets it go. A name the CA cannot validate gets its error in State.
func TestKeep(t *testing.T) {
	tlsLn := loopbackListener(t)
	pb := pebbletest.Start(t, pebbletest.Options{TLSPort: port(tlsLn), Validity: 30 * time.Second})
	name := "alice." + certsDomain
	if err := pb.AddA(name, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	roots, err := pb.IssuingRoots()
	if err != nil {
		t.Fatal(err)
	}
	spare := loopbackListener(t) // a port certmagic may bind, closed
	spare.Close()
	c := newCerts(t, Config{CA: pb.DirectoryURL, CARoots: pb.ClientRoots, Dir: t.TempDir(), Keep: true, DisableHTTP01: true,
		ListenHost: "127.0.0.1", TLSALPNPort: port(spare), RenewCheck: time.Second, Logger: testlog.New(t, slog.LevelDebug)})
	srv := &http.Server{TLSConfig: c.TLSConfig(), Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go srv.ServeTLS(tlsLn, "", "")
	t.Cleanup(func() { srv.Close() })
	if st := c.State(name); st.Held || st.Ordering {
		t.Fatalf("before Keep: %+v", st)
	}
	if err := c.Keep(name); err != nil {
		t.Fatal(err)
	}
	var first NameState
	testenv.WaitFor(t, time.Minute, "the certificate", func() bool { first = c.State(name); return first.Held })
	if first.Ordering || first.LastError != "" || !strings.Contains(first.Issuer, "Pebble") || time.Until(first.NotAfter) > 31*time.Second {
		t.Fatalf("after the order: %+v", first)
	}
	leaf, err := pebbletest.Leaf(tlsLn.Addr().String(), name, roots)
	if err != nil || !leaf.NotAfter.Equal(first.NotAfter) {
		t.Fatalf("served %v (%v), want the certificate held until %v", leaf, err, first.NotAfter)
	}
	// Pebble sometimes refuses a renewal that names the certificate it
	// replaces (ARI, HTTP 500 "could not find an order for the given
	// certificate"); certmagic then tries again without it, after its
	// first retry interval of a minute. The wait covers that retry.
	testenv.WaitFor(t, 3*time.Minute, "the renewal", func() bool { return c.State(name).NotAfter.After(first.NotAfter) })
	if leaf, err := pebbletest.Leaf(tlsLn.Addr().String(), name, roots); err != nil || !leaf.NotAfter.After(first.NotAfter) {
		t.Fatalf("after the renewal the old certificate is served: %v %v", leaf, err)
	}

	c.Drop(name)
	if st := c.State(name); st.Held {
		t.Fatalf("after Drop: %+v", st)
	}

	// Nothing answers for this one: the CA's validation fails.
	other := "bob." + certsDomain
	if err := pb.AddA(other, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := c.Keep(other); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "bob's failure", func() bool { return c.State(other).LastError != "" })
	if st := c.State(other); st.Held || st.Ordering {
		t.Fatalf("after a failed order: %+v", st)
	}
	if err := newCerts(t, Config{Dir: t.TempDir(), Allow: func(context.Context, string) error { return nil }}).Keep(name); err == nil {
		t.Error("Keep on an on-demand manager succeeded")
	}
}
