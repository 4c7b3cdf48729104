package update

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRefuseGokrazyUpdates (issue 16, finding 8): with the refusals in
// place, gokrazy registering its update API the way its init does
// (method-less patterns on the same mux) neither panics nor gets the
// writes; its reading endpoints still answer.
func TestRefuseGokrazyUpdates(t *testing.T) {
	mux := http.NewServeMux()
	RefuseGokrazyUpdates(mux)
	wrote := false
	gokrazy := func(w http.ResponseWriter, r *http.Request) { wrote = true; w.Write([]byte("gokrazy")) }
	for _, p := range []string{"/update/features", "/update/mbr", "/update/root", "/update/switch", "/update/testboot", "/update/boot", "/update/bootonly", "/reboot"} {
		mux.HandleFunc(p, gokrazy) // panics on a conflicting pattern
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"PUT", "/update/root", 403}, {"PUT", "/update/boot", 403}, {"PUT", "/update/mbr", 403},
		{"PUT", "/update/bootonly", 403}, {"POST", "/update/bootonly", 403},
		{"POST", "/update/switch", 403}, {"POST", "/update/testboot", 403},
		{"GET", "/update/features", 200},
	} {
		wrote = false
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, strings.NewReader("image")))
		if rec.Code != c.code || (c.code == 403) == wrote {
			t.Errorf("%s %s: got %d (gokrazy's handler ran: %v), want %d", c.method, c.path, rec.Code, wrote, c.code)
		}
	}
}
