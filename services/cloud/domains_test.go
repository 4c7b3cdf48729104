package cloud

import (
	"crypto/ed25519"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/pc2/pc2/services/gateway/customdomain"
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
