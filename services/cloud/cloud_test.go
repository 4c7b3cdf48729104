package cloud

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/internal/testing/testlog"
	"github.com/pc2/pc2/provisioning/identity"
)

// testNode is the node under a cloud in these tests: an identity and
// nothing else (the personal package tests the real one).
type testNode struct {
	mu      sync.Mutex
	key     ed25519.PrivateKey
	pending string
}

func (n *testNode) DID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.key == nil {
		return ""
	}
	id, _ := identity.IDFromPublicKey(n.key.Public().(ed25519.PublicKey))
	return id.DID()
}

func (n *testNode) PendingWords() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pending
}

func (n *testNode) SetIdentity(words, pass string) (string, error) {
	k, err := identity.NodeKeyFromMnemonic(words, pass)
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	n.key, n.pending = k, ""
	n.mu.Unlock()
	return n.DID(), nil
}

func (n *testNode) Key() ed25519.PrivateKey {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.key
}

func (n *testNode) Status() NodeStatus {
	return NodeStatus{State: "online", Mode: "relayed", Supernodes: []string{"sn1"}, Started: time.Unix(1e9, 0)}
}

// The BIP39 test vector's words and the DID they give (docs/identity.md).
const (
	vectorWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t       *testing.T
	srv     *Server
	node    *testNode
	local   *httptest.Server // direct clients, on the local network
	remote  *httptest.Server // direct clients from the internet
	relayed *httptest.Server // through a relay
	clock   *clock
	dir     string

	mu      sync.Mutex
	codes   []string            // shown by ShowSetupCode
	updates UpdateStatus        // what Options.Updates answers
	actions fakeUpdates         // Options.UpdateActions
	dev     fakeSettings        // Options.DeviceSettings
	txt     map[string][]string // what Options.LookupTXT finds
}

// fakeUpdates is the device's update buttons: Check answers found,
// Install counts.
type fakeUpdates struct {
	mu        sync.Mutex
	found     string
	checkErr  error
	checks    int
	installs  int
	installEr error
}

func (f *fakeUpdates) Check(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	return f.found, f.checkErr
}

func (f *fakeUpdates) Install() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installs++
	return f.installEr
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, node: &testNode{}, clock: &clock{t: time.Now()}, dir: t.TempDir()}
	var err error
	logs := NewLogRing(50)
	e.srv, err = New(Options{DataDir: e.dir, Node: e.node, Version: "test", Now: e.clock.now, Logs: logs,
		ShowSetupCode: func(c string) { e.mu.Lock(); e.codes = append(e.codes, c); e.mu.Unlock() },
		Updates:       func() UpdateStatus { e.mu.Lock(); defer e.mu.Unlock(); return e.updates },
		UpdateActions: &e.actions, DeviceSettings: &e.dev,
		LookupTXT: func(_ context.Context, name string) ([]string, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if v, ok := e.txt[name]; ok {
				return v, nil
			}
			return nil, errors.New("no such host")
		},
		Logger: slog.New(logs.Handler(slog.NewTextHandler(testlog.Writer(t), nil)))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close() })
	e.local = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.local.Close)
	e.remote = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The same cloud, seen from a public address.
		r.RemoteAddr = "203.0.113.9:5000"
		e.srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(e.remote.Close)
	e.relayed = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Forwarded-For", "198.51.100.4")
		r.Header.Set("X-Forwarded-Proto", "https")
		e.srv.RelayedHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(e.relayed.Close)
	return e
}

func (e *env) browser(base string) *cloudtest.Browser { return cloudtest.New(e.t, base, nil) }

// setup completes the wizard from a local browser; it is then logged in.
func (e *env) setup(pw string) *cloudtest.Browser {
	e.t.Helper()
	b := e.browser(e.local.URL)
	b.CreateIdentity()
	b.Password(pw)
	b.Step("skip", nil)
	if !e.srv.SetupDone() {
		e.t.Fatal("setup not done after the wizard")
	}
	return b
}

func TestWizardCreateAndAccess(t *testing.T) {
	e := newEnv(t)
	// Not set up: / leads to the wizard.
	b := e.browser(e.local.URL)
	if r := b.Get("/"); r.Code != http.StatusSeeOther || r.Location() != "/_/setup" {
		t.Fatalf("/ before setup: %d %s", r.Code, r.Location())
	}
	// From the internet: the setup code first; wrong codes are refused.
	r := e.browser(e.remote.URL)
	if p := r.Get("/_/setup"); !strings.Contains(p.Body, `id="code"`) || strings.Contains(p.Body, `id="create"`) {
		t.Fatalf("remote wizard without code: %.300q", p.Body)
	}
	if p := r.Post("/_/setup", url.Values{"action": {"code"}, "code": {"WRONG-CODE1"}}); p.Code != http.StatusForbidden {
		t.Fatalf("wrong code: %d", p.Code)
	}
	rel := e.browser(e.relayed.URL)
	if p := rel.Get("/_/setup"); !strings.Contains(p.Body, `id="code"`) {
		t.Fatal("relayed browser reached the wizard without the setup code")
	}
	code := e.srv.SetupCode()
	if len(code) != 11 {
		t.Fatalf("setup code %q", code)
	}
	if p := rel.Post("/_/setup", url.Values{"action": {"code"}, "code": {strings.ToLower(strings.ReplaceAll(code, "-", ""))}}); p.Code != http.StatusSeeOther {
		t.Fatalf("right code: %d %s", p.Code, p.Err())
	}
	if p := rel.Get("/_/setup"); !strings.Contains(p.Body, `id="create"`) {
		t.Fatal("the setup code did not open the wizard")
	}
	// One-time: the same code does not work again.
	if p := r.Post("/_/setup", url.Values{"action": {"code"}, "code": {code}}); p.Code != http.StatusForbidden {
		t.Fatalf("used code again: %d", p.Code)
	}
	if e.srv.SetupCode() == code {
		t.Fatal("the setup code was not replaced after use")
	}
	e.mu.Lock()
	if len(e.codes) != 2 || e.codes[0] != code || e.codes[1] != e.srv.SetupCode() {
		t.Errorf("codes shown to the owner %v, want %s then the new one", e.codes, code)
	}
	e.mu.Unlock()
	// Steps cannot be skipped, and posts need the wizard's CSRF token.
	if p := rel.TryStep("password", url.Values{"password": {"x"}}); p.Code != http.StatusConflict {
		t.Fatalf("password step before identity: %d", p.Code)
	}
	if p := rel.Post("/_/setup", url.Values{"action": {"create"}}); p.Code != http.StatusForbidden {
		t.Fatalf("wizard post without csrf: %d", p.Code)
	}

	words := rel.CreateIdentity()
	want, _ := identity.NodeKeyFromMnemonic(strings.Join(words, " "), "")
	if !e.node.Key().Equal(want) {
		t.Fatal("the node's identity is not the one of the words shown")
	}
	if p := rel.TryStep("password", url.Values{"password": {"short"}, "password2": {"short"}}); p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, "at least") {
		t.Fatalf("short password: %d", p.Code)
	}
	if p := rel.TryStep("password", url.Values{"password": {"correct horse"}, "password2": {"correct horsf"}}); p.Code != http.StatusUnprocessableEntity {
		t.Fatalf("different passwords: %d", p.Code)
	}
	rel.Password("correct horse")
	rel.Step("skip", nil)
	if p := rel.Get("/_/"); p.Code != http.StatusOK || !strings.Contains(p.Body, e.node.DID()) {
		t.Fatalf("dashboard after the wizard: %d", p.Code)
	}
	// The wizard is gone, for everyone.
	if p := b.Get("/_/setup"); p.Code != http.StatusSeeOther || p.Location() != "/_/login" {
		t.Fatalf("wizard after setup: %d %s", p.Code, p.Location())
	}
	if e.srv.SetupCode() != "" {
		t.Fatal("setup code still offered after setup")
	}
	// The setup survives a restart.
	s2, err := New(Options{DataDir: e.dir, Node: e.node})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !s2.SetupDone() {
		t.Fatal("setup forgotten after a restart")
	}
}

func TestWizardRestoreKeepPending(t *testing.T) {
	e := newEnv(t)
	b := e.browser(e.local.URL)
	b.Step("restore", nil)
	if p := b.TryStep("restore-words", url.Values{"words": {"abandon abandon"}}); p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, "24") {
		t.Fatalf("bad words: %d %s", p.Code, p.Err())
	}
	b.Step("restore-words", url.Values{"words": {"  " + strings.ToUpper(vectorWords) + "\n"}})
	want, _ := identity.NodeKeyFromMnemonic(vectorWords, "")
	if !e.node.Key().Equal(want) {
		t.Fatal("restore did not set the words' identity")
	}

	// A device that made its identity itself shows those words.
	e2 := newEnv(t)
	pending := "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title"
	e2.node.SetIdentity(pending, "")
	e2.node.pending = pending
	words := e2.browser(e2.local.URL).CreateIdentity()
	if strings.Join(words, " ") != pending {
		t.Fatalf("create showed %v, want the device's pending words", words)
	}
	// A provisioned identity can be kept.
	e3 := newEnv(t)
	e3.node.SetIdentity(vectorWords, "")
	b3 := e3.browser(e3.local.URL)
	if p := b3.Get("/_/setup"); !strings.Contains(p.Body, `id="keep"`) {
		t.Fatal("no keep option for a provisioned identity")
	}
	b3.Step("keep", nil)
	if p := b3.Get("/_/setup"); !strings.Contains(p.Body, `id="set-password"`) {
		t.Fatal("keep did not lead to the password step")
	}
}

func TestLoginSessionsCSRF(t *testing.T) {
	e := newEnv(t)
	e.setup("correct horse")
	b := e.browser(e.local.URL)
	if p := b.Get("/_/"); p.Code != http.StatusSeeOther || !strings.HasPrefix(p.Location(), "/_/login") {
		t.Fatalf("dashboard logged out: %d %s", p.Code, p.Location())
	}
	if p := b.Post("/_/login", url.Values{"password": {"wrong"}}); p.Code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", p.Code)
	}
	// A login from another site is refused.
	req, _ := http.NewRequest("POST", "/_/login", strings.NewReader("password=correct+horse"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if p := b.Do(req); p.Code != http.StatusForbidden {
		t.Fatalf("cross-site login: %d", p.Code)
	}
	p := b.Post("/_/login", url.Values{"password": {"correct horse"}, "next": {"//evil.example/"}})
	if p.Code != http.StatusSeeOther || p.Location() != "/_/" {
		t.Fatalf("login: %d %q", p.Code, p.Location())
	}
	ck := p.Header.Get("Set-Cookie")
	if !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Lax") || strings.Contains(ck, "Secure") {
		t.Fatalf("session cookie over plain local HTTP: %s", ck)
	}
	// On disk (a stolen card): the password's argon2id hash and the
	// session token's SHA-256, never the secrets themselves.
	token, _, _ := strings.Cut(strings.TrimPrefix(ck, sessionCookie+"="), ";")
	sessions, _ := os.ReadFile(filepath.Join(e.dir, "state", "sessions.json"))
	ownerFile, _ := os.ReadFile(filepath.Join(e.dir, "state", "owner.json"))
	if len(token) < 20 || strings.Contains(string(sessions), token) || !strings.Contains(string(sessions), tokenHash(token)) {
		t.Fatalf("sessions.json does not hold the token's hash only: %s", sessions)
	}
	if strings.Contains(string(ownerFile), "correct horse") || !strings.Contains(string(ownerFile), "$argon2id$") {
		t.Fatalf("owner.json does not hold an argon2id hash only: %s", ownerFile)
	}
	// State changes need the CSRF token, and no cross-site request.
	if p := b.Post("/_/mkdir", url.Values{"dir": {""}, "name": {"x"}}); p.Code != http.StatusForbidden {
		t.Fatalf("mkdir without csrf: %d", p.Code)
	}
	tok := b.CSRF("/_/")
	req, _ = http.NewRequest("POST", "/_/mkdir", strings.NewReader(url.Values{"csrf": {tok}, "name": {"x"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if p := b.Do(req); p.Code != http.StatusForbidden {
		t.Fatalf("cross-site mkdir with a token: %d", p.Code)
	}
	if p := b.Post("/_/mkdir", url.Values{"csrf": {tok}, "name": {"x"}}); p.Code != http.StatusSeeOther {
		t.Fatalf("mkdir: %d", p.Code)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "files", "x")); err != nil {
		t.Fatal(err)
	}
	// Over HTTPS through a gateway, the cookie is Secure.
	rb := e.browser(e.relayed.URL)
	if p := rb.Post("/_/login", url.Values{"password": {"correct horse"}}); !strings.Contains(p.Header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("session cookie through an https gateway: %s", p.Header.Get("Set-Cookie"))
	}
	// Rate limit: the burst, then 429 for this client, even with the
	// right password; the local browser is not affected.
	x := e.browser(e.remote.URL)
	limited := false
	for i := 0; i < 10 && !limited; i++ {
		limited = x.Post("/_/login", url.Values{"password": {"guess"}}).Code == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("no rate limit on wrong passwords")
	}
	if p := x.Post("/_/login", url.Values{"password": {"correct horse"}}); p.Code != http.StatusTooManyRequests {
		t.Fatalf("right password while limited: %d", p.Code)
	}
	e.browser(e.local.URL).Login("correct horse")
	e.clock.add(time.Minute)
	x.Login("correct horse")
	// Logout everywhere ends every session.
	if p := b.Post("/_/logout", url.Values{"csrf": {b.CSRF("/_/")}, "all": {"1"}}); p.Code != http.StatusSeeOther {
		t.Fatalf("logout all: %d", p.Code)
	}
	for _, br := range []*cloudtest.Browser{b, x, rb} {
		if p := br.Get("/_/"); p.Code != http.StatusSeeOther {
			t.Fatalf("session alive after logout everywhere: %d", p.Code)
		}
	}
	// Sessions survive a restart, and expire when unused.
	x.Login("correct horse")
	s2, err := New(Options{DataDir: e.dir, Node: e.node, Now: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ts := httptest.NewServer(s2.Handler())
	defer ts.Close()
	x.Base = ts.URL
	if p := x.Get("/_/"); p.Code != http.StatusOK {
		t.Fatalf("session after restart: %d", p.Code)
	}
	e.clock.add(8 * 24 * time.Hour)
	if p := x.Get("/_/"); p.Code != http.StatusSeeOther {
		t.Fatalf("session idle 8 days: %d", p.Code)
	}
}

// TestTrusted: the node's own details are for the owner's session or a
// browser on the local network; a stranger on the internet, directly or
// relayed, gets neither, and a session makes any path trusted.
func TestTrusted(t *testing.T) {
	e := newEnv(t)
	req := func(remote string) *http.Request {
		r := httptest.NewRequest("GET", "/api/status", nil)
		r.RemoteAddr = remote
		return r
	}
	for _, c := range []struct {
		remote  string
		relayed bool
		want    bool
	}{
		{"127.0.0.1:5000", false, true},
		{"192.168.1.20:5000", false, true},
		{"203.0.113.9:5000", false, false},
		{"127.0.0.1:5000", true, false}, // a libp2p stream is never local
	} {
		if got := e.srv.Trusted(req(c.remote), c.relayed); got != c.want {
			t.Errorf("Trusted(%s, relayed %v): got %v, want %v", c.remote, c.relayed, got, c.want)
		}
	}
	token, _, err := e.srv.auth.newSession(clientInfo{IP: "198.51.100.4"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := req("203.0.113.9:5000")
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
	if !e.srv.Trusted(r, true) {
		t.Error("Trusted with the owner's session: got false, want true")
	}
	r = req("203.0.113.9:5000")
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: "forged"})
	if e.srv.Trusted(r, true) {
		t.Error("Trusted with a forged session: got true, want false")
	}
}
