package cloud

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pc2/pc2/services/gateway/customdomain"
	"github.com/pc2/pc2/services/gateway/namesapi"
)

// TestDomainsPage (issue 20): the owner adds her own domain and gets the
// DNS records to create: a CNAME to her name, and a TXT proof that
// verifies for her DID; the page reads the proof back from DNS. Bad
// domains and a ninth are refused; strangers and forms without the CSRF
// token change nothing.
func TestDomainsPage(t *testing.T) {
	e := newEnv(t)
	b := e.setup("owner password")
	if err := e.srv.state.updateOwner(func(o *owner) { o.Name = "alice.pc2.test" }); err != nil {
		t.Fatal(err)
	}
	if r := b.Get("/_/"); !strings.Contains(r.Body, `href="/_/domains"`) {
		t.Error("the dashboard does not link the own-domains page")
	}
	csrf := b.CSRF("/_/domains")
	if r := e.browser(e.local.URL).Post("/_/domains", url.Values{"csrf": {csrf}, "domain": {"evil.example.test"}}); r.Code != http.StatusUnauthorized {
		t.Errorf("a stranger's domain: %d", r.Code)
	}
	if r := b.Post("/_/domains", url.Values{"domain": {"evil.example.test"}}); r.Code != http.StatusForbidden {
		t.Errorf("a domain without the CSRF token: %d", r.Code)
	}
	for _, bad := range []string{"not a domain", "localhost", "pc2.test", "Cloud.Example.Test.x_y"} {
		b.Post("/_/domains", url.Values{"csrf": {csrf}, "domain": {bad}})
	}
	b.Post("/_/domains", url.Values{"csrf": {csrf}, "domain": {" Cloud.Example.Test. "}})
	if got := e.srv.state.getOwner().Domains; len(got) != 1 || got[0] != "cloud.example.test" {
		t.Fatalf("own domains after the forms: %q", got)
	}

	page := b.Get("/_/domains").Body
	if !strings.Contains(page, "<code>cloud.example.test</code></td><td>CNAME</td><td><code class=\"dns-CNAME\">alice.pc2.test.</code>") {
		t.Errorf("no CNAME to the name on the page:\n%s", page)
	}
	m := regexp.MustCompile(`<code class="dns-TXT">([^<]+)</code>`).FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, "<code>_pc2.cloud.example.test</code>") {
		t.Fatalf("no TXT proof on the page:\n%s", page)
	}
	if id, err := customdomain.Verify([]string{m[1]}, "cloud.example.test"); err != nil || id.DID() != e.node.DID() {
		t.Fatalf("the proof shown verifies as %v %v, want %s", id, err, e.node.DID())
	}
	if !strings.Contains(page, "no proof found in DNS yet") {
		t.Error("the page does not say the proof is missing from DNS")
	}
	_, other, _ := ed25519.GenerateKey(nil)
	theirs, _ := customdomain.Sign(other, "cloud.example.test")
	e.mu.Lock()
	e.txt = map[string][]string{"_pc2.cloud.example.test": {theirs}}
	e.mu.Unlock()
	if page := b.Get("/_/domains").Body; !strings.Contains(page, "another node") {
		t.Error("the page does not say the proof in DNS is another node's")
	}
	e.mu.Lock()
	e.txt = map[string][]string{"_pc2.cloud.example.test": {"v=spf1 -all", m[1]}}
	e.mu.Unlock()
	if page := b.Get("/_/domains").Body; !strings.Contains(page, "the proof is in place") {
		t.Error("the page does not say the proof is in place")
	}

	for i := range 10 {
		b.Post("/_/domains", url.Values{"csrf": {csrf}, "domain": {"d" + string(rune('a'+i)) + ".example.test"}})
	}
	if n := len(e.srv.state.getOwner().Domains); n != maxDomains {
		t.Errorf("%d own domains after adding many, want at most %d", n, maxDomains)
	}
	b.Post("/_/domains/remove", url.Values{"csrf": {csrf}, "domain": {"cloud.example.test"}})
	if page := b.Get("/_/domains").Body; strings.Contains(page, `data-domain="cloud.example.test"`) {
		t.Error("a removed domain is still on the page")
	}
}

// TestRenewHosts: an own domain registered with the name's operator is
// registered again (without a code) once half its time is gone, and
// not before; a removed domain is not.
func TestRenewHosts(t *testing.T) {
	e := newEnv(t)
	e.setup("owner password")
	var mu sync.Mutex
	var calls []namesapi.HostRequest
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req namesapi.HostRequest
		if r.URL.Path != "/api/hosts" || r.Host != "pc2.test" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, `{"error": "bad request"}`, http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls = append(calls, req)
		mu.Unlock()
		json.NewEncoder(w).Encode(namesapi.HostInfo{Host: req.Host, DID: e.node.DID(), Domain: "pc2.test", Expires: e.clock.now().Add(90 * 24 * time.Hour)})
	}))
	t.Cleanup(api.Close)
	if err := e.srv.state.updateOwner(func(o *owner) {
		o.Name, o.NameAPI, o.Domains = "alice.pc2.test", api.URL, []string{"cloud.example.test", "gone.example.test"}
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"cloud.example.test", "gone.example.test"} {
		if err := e.srv.registerHost(context.Background(), e.srv.state.getOwner(), d, "code-0001"); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser(e.local.URL)
	b.Login("owner password")
	b.Post("/_/domains/remove", url.Values{"csrf": {b.CSRF("/_/domains")}, "domain": {"gone.example.test"}})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
	e.clock.add(44 * 24 * time.Hour)
	if err := e.srv.RenewHosts(context.Background()); err != nil || count() != 2 {
		t.Fatalf("before half its time: %v, %d calls", err, count())
	}
	e.clock.add(2 * 24 * time.Hour)
	if err := e.srv.RenewHosts(context.Background()); err != nil || count() != 3 {
		t.Fatalf("after half its time: %v, %d calls", err, count())
	}
	mu.Lock()
	last := calls[2]
	mu.Unlock()
	if last.Host != "cloud.example.test" || last.Invite != "" {
		t.Errorf("renewal %+v, want cloud.example.test without a code", last)
	}
	if reg := e.srv.state.getOwner().Registered; len(reg) != 1 || !reg["cloud.example.test"].Until.After(e.clock.now().Add(89*24*time.Hour)) {
		t.Errorf("registrations after the renewal: %+v", reg)
	}
}
