package files

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/pc2/pc2/internal/testing/testenv"
)

// TestLitmus runs the WebDAV compliance suite litmus (Debian package
// litmus) against DAV and requires every test of the basic, copymove and
// props suites to pass. Warnings are allowed.
func TestLitmus(t *testing.T) {
	bin, err := exec.LookPath("litmus")
	if err != nil {
		testenv.SkipOrFail(t, "litmus not installed (apt install litmus): %v", err)
	}
	s := newStore(t, 0)
	mux := http.NewServeMux()
	mux.Handle("/dav/", s.DAV("/dav/"))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	suites := []string{"basic", "copymove", "props"}
	cmd := exec.CommandContext(t.Context(), bin, "-k", srv.URL+"/dav/")
	cmd.Dir = t.TempDir() // litmus writes debug.log and child.log there
	cmd.Env = append(os.Environ(), "TESTS="+strings.Join(suites, " "))
	out, err := cmd.CombinedOutput()
	defer func() {
		if t.Failed() {
			t.Logf("litmus output:\n%s", out)
		}
	}()
	if err != nil {
		t.Errorf("litmus: %v", err)
	}
	summary := regexp.MustCompile("<- summary for `(\\w+)': of (\\d+) tests run: (\\d+) passed, (\\d+) failed")
	got := map[string]bool{}
	for _, m := range summary.FindAllStringSubmatch(string(out), -1) {
		got[m[1]] = true
		t.Logf("%s", m[0])
		if m[2] != m[3] || m[4] != "0" {
			t.Errorf("suite %s: %s of %s tests passed, %s failed", m[1], m[3], m[2], m[4])
		}
	}
	for _, suite := range suites {
		if !got[suite] {
			t.Errorf("suite %s: no summary", suite)
		}
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "FAIL") || strings.Contains(line, "SKIPPED") {
			t.Errorf("litmus: %s", strings.TrimSpace(line))
		}
	}
}
