package updateapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/internal/testing/updatetest"
)

// adminHeader is what the test auth wrapper wants to see.
const adminHeader = "X-Test-Admin"

func testAdmin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(adminHeader) != "yes" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

// apiServer serves u's update endpoints; installed receives what the
// install endpoint reports.
func apiServer(t testing.TB, u *update.Updater) (srv *httptest.Server, installed <-chan *manifest.Manifest) {
	t.Helper()
	ch := make(chan *manifest.Manifest, 1)
	mux := http.NewServeMux()
	Routes(mux, u, testAdmin, func(m *manifest.Manifest) { ch <- m })
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, ch
}

// uploadPart is one part of an upload.
type uploadPart struct {
	name string
	data []byte
}

// uploadParts returns the parts pc2 update sends for r: manifest,
// signature, then the named artifacts.
func uploadParts(r *updatetest.Release, artifacts ...string) []uploadPart {
	parts := []uploadPart{{PartManifest, r.Raw}, {PartSignature, r.Sig}}
	for _, a := range artifacts {
		b := map[string][]byte{manifest.Root: r.Root, manifest.Boot: r.Boot}[a]
		parts = append(parts, uploadPart{a, b})
	}
	return parts
}

// postUpload uploads parts to path (as the admin unless anonymous) and returns
// the status and the decoded answer.
func postUpload(t testing.TB, srv *httptest.Server, path string, admin bool, parts ...uploadPart) (int, Answer) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.name == PartManifest || p.name == PartSignature {
			w, err = mw.CreateFormField(p.name)
		} else {
			w, err = mw.CreateFormFile(p.name, p.name+".img")
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if admin {
		req.Header.Set(adminHeader, "yes")
	}
	return doAPI(t, srv, req)
}

func doAPI(t testing.TB, srv *httptest.Server, req *http.Request) (int, Answer) {
	t.Helper()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a Answer
	if resp.StatusCode != http.StatusUnauthorized {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q, want JSON", req.Method, req.URL.Path, ct)
		}
		if err := json.Unmarshal(b, &a); err != nil {
			t.Errorf("%s %s: %s: not a JSON answer: %q", req.Method, req.URL.Path, resp.Status, b)
		}
	}
	return resp.StatusCode, a
}

// getStatus GETs /api/update (with the log when withLog).
func getStatus(t testing.TB, srv *httptest.Server, withLog, admin bool) (int, update.Status) {
	t.Helper()
	u := srv.URL + "/api/update"
	if withLog {
		u += "?log=1"
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if admin {
		req.Header.Set(adminHeader, "yes")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s update.Status
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, s
}

func TestAPICheck(t *testing.T) {
	d := updatetest.NewDevice(t)
	srv, _ := apiServer(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil))
	same := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	newKernel := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
	other, _ := updatetest.ReleaseKey(t, 9)
	otherKey := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Key: other})
	otherBoard := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Board: "rpi4"})
	before := d.Snapshot()

	for _, tc := range []struct {
		name   string
		parts  []uploadPart
		admin  bool
		code   int
		needs  []string
		errHas string
	}{
		{"same boot", uploadParts(same), true, http.StatusOK, []string{manifest.Root}, ""},
		{"new kernel", uploadParts(newKernel), true, http.StatusOK, []string{manifest.Root, manifest.Boot}, ""},
		{"not the admin", uploadParts(same), false, http.StatusUnauthorized, nil, ""},
		{"no signature part", uploadParts(same)[:1], true, http.StatusForbidden, nil, "not signed"},
		{"other key", uploadParts(otherKey), true, http.StatusForbidden, nil, "trusted release key"},
		{"other board", uploadParts(otherBoard), true, http.StatusUnprocessableEntity, nil, "another board"},
		{"signature first", []uploadPart{{PartSignature, same.Sig}, {PartManifest, same.Raw}}, true, http.StatusBadRequest, nil, "starts with"},
	} {
		code, a := postUpload(t, srv, "/api/update/check", tc.admin, tc.parts...)
		if code != tc.code {
			t.Errorf("%s: status %d, want %d (%+v)", tc.name, code, tc.code, a)
			continue
		}
		if code == http.StatusOK {
			if a.Version != "1.1.0" || strings.Join(a.Needs, ",") != strings.Join(tc.needs, ",") || a.Error != "" {
				t.Errorf("%s: answer %+v, want 1.1.0 needing %v", tc.name, a, tc.needs)
			}
		} else if tc.errHas != "" && (a.Result != Refused || !strings.Contains(a.Error, tc.errHas)) {
			t.Errorf("%s: answer %+v, want refused with %q", tc.name, a, tc.errHas)
		}
	}
	d.CheckUntouched(before)
	// A refused check is recorded like a refused install.
	if st := d.State(); st.Pending != nil || st.Last == nil || st.Last.Outcome != Refused || !strings.Contains(st.Last.Reason, "another board") ||
		!strings.HasPrefix(st.Last.Source, "push from ") {
		t.Errorf("state after the checks: pending %+v, last %+v; want the last refusal", st.Pending, st.Last)
	}
}

func TestAPIInstall(t *testing.T) {
	d := updatetest.NewDevice(t)
	srv, installed := apiServer(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil))
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})

	// Not the admin: nothing happens.
	before := d.Snapshot()
	if code, _ := postUpload(t, srv, "/api/update", false, uploadParts(r, manifest.Root, manifest.Boot)...); code != http.StatusUnauthorized {
		t.Errorf("anonymous install: status %d, want 401", code)
	}
	d.CheckUntouched(before)

	code, a := postUpload(t, srv, "/api/update", true, uploadParts(r, manifest.Root, manifest.Boot)...)
	if code != http.StatusOK || a.Result != Installed || a.Version != "1.1.0" || a.Error != "" {
		t.Fatalf("install: %d %+v, want 200 installed 1.1.0", code, a)
	}
	select {
	case m := <-installed:
		if m.Version != "1.1.0" {
			t.Errorf("installed called with %s, want 1.1.0", m.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("installed was not called")
	}
	if !bytes.Equal(d.BootFile("b/vmlinuz"), updatetest.KernelOf("1.1.0")) {
		t.Error("boot slot b does not have the new kernel")
	}
	if p := d.State().Pending; p == nil || p.Version != "1.1.0" || !strings.HasPrefix(p.Source, "push from 127.0.0.1:") {
		t.Errorf("pending %+v, want 1.1.0 pushed from loopback", p)
	}

	code, st := getStatus(t, srv, true, true)
	if code != http.StatusOK || st.Testing == nil || st.Testing.Version != "1.1.0" || st.Version != "1.0.0" || st.Partition != 2 {
		t.Errorf("GET /api/update?log=1: %d %+v", code, st)
	}
	for _, line := range []string{"installing 1.1.0", fmt.Sprintf("root: %d bytes received and checked", len(r.Root)), "boot slot b written", "1.1.0 written to partition 3"} {
		if !strings.Contains(st.Log, line) {
			t.Errorf("the log lacks %q:\n%s", line, st.Log)
		}
	}
	if code, st := getStatus(t, srv, false, true); code != http.StatusOK || st.Log != "" || st.Testing == nil {
		t.Errorf("GET /api/update: %d, log %q, testing %+v; want no log", code, st.Log, st.Testing)
	}
	if code, _ := getStatus(t, srv, true, false); code != http.StatusUnauthorized {
		t.Errorf("anonymous GET /api/update: %d, want 401", code)
	}

	// The next upload waits for the test boot, and a refused check does
	// not replace the pending update.
	r2 := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.2.0", MinVersion: "1.0.0"})
	if code, a := postUpload(t, srv, "/api/update", true, uploadParts(r2, manifest.Root)...); code != http.StatusConflict || a.Result != Refused {
		t.Errorf("install during the test boot: %d %+v, want 409 refused", code, a)
	}
	wrong := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.2.0", MinVersion: "1.0.0", Board: "rpi4"})
	if code, _ := postUpload(t, srv, "/api/update/check", true, uploadParts(wrong)...); code != http.StatusUnprocessableEntity {
		t.Errorf("check of another board's release: %d, want 422", code)
	}
	if p := d.State().Pending; p == nil || p.Version != "1.1.0" {
		t.Errorf("pending %+v, want 1.1.0 still", p)
	}
}

func TestAPIInstallRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parts  func(*updatetest.Release) []uploadPart
		code   int
		result string
		errHas string
	}{
		{"no signature part", func(r *updatetest.Release) []uploadPart {
			return []uploadPart{{PartManifest, r.Raw}, {manifest.Root, r.Root}}
		}, http.StatusForbidden, Refused, "not signed"},
		{"empty signature", func(r *updatetest.Release) []uploadPart {
			return []uploadPart{{PartManifest, r.Raw}, {PartSignature, nil}, {manifest.Root, r.Root}}
		}, http.StatusForbidden, Refused, "not signed"},
		{"tampered root", func(r *updatetest.Release) []uploadPart {
			root := bytes.Clone(r.Root)
			root[12345] ^= 0x80
			return []uploadPart{{PartManifest, r.Raw}, {PartSignature, r.Sig}, {manifest.Root, root}}
		}, http.StatusUnprocessableEntity, Refused, "SHA-256"},
		{"boot before root", func(r *updatetest.Release) []uploadPart { return uploadParts(r, manifest.Boot, manifest.Root) }, http.StatusBadRequest, Refused, `next part is "boot", the device needs "root"`},
		{"no root", func(r *updatetest.Release) []uploadPart { return uploadParts(r) }, http.StatusBadRequest, Refused, "no root part"},
		{"no boot", func(r *updatetest.Release) []uploadPart { return uploadParts(r, manifest.Root) }, http.StatusBadRequest, Refused, "no boot part"},
		{"signature first", func(r *updatetest.Release) []uploadPart {
			return []uploadPart{{PartSignature, r.Sig}, {PartManifest, r.Raw}, {manifest.Root, r.Root}}
		}, http.StatusBadRequest, Refused, `starts with "signature"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := updatetest.NewDevice(t)
			srv, installed := apiServer(t, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil))
			r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0", Kernel: updatetest.KernelOf("1.1.0")})
			before := d.Snapshot()
			code, a := postUpload(t, srv, "/api/update", true, tc.parts(r)...)
			if code != tc.code || a.Result != tc.result || !strings.Contains(a.Error, tc.errHas) {
				t.Errorf("status %d, answer %+v; want %d %s with %q", code, a, tc.code, tc.result, tc.errHas)
			}
			d.CheckUntouched(before)
			select {
			case m := <-installed:
				t.Errorf("installed called with %s", m.Version)
			default:
			}
			if st := d.State(); st.Pending != nil {
				t.Errorf("pending %+v after a refused upload", st.Pending)
			}
		})
	}
}

// TestClient pushes a bundle folder with the client `pc2 update` uses:
// it checks first, sends only what the device needs, and reads the status.
func TestClient(t *testing.T) {
	d := updatetest.NewDevice(t)
	mux := http.NewServeMux()
	basicAuth := func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "admin" || p != "secret" {
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			next(w, r)
		}
	}
	Routes(mux, d.Updater(2, updatetest.RunningRelease("1.0.0"), nil), basicAuth, nil)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	b, err := OpenBundle(r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Version != "1.1.0" || !bytes.Equal(b.Raw, r.Raw) || !bytes.Equal(b.Sig, r.Sig) {
		t.Errorf("OpenBundle = %s, want the release's manifest and signature", b.Manifest.Version)
	}

	if _, err := (&Client{Base: srv.URL, Password: "wrong", HTTP: srv.Client()}).Check(t.Context(), b); err == nil {
		t.Error("Check with the wrong password succeeded")
	}
	c := &Client{Base: srv.URL + "/", Password: "secret", HTTP: srv.Client()}
	a, err := c.Check(t.Context(), b)
	if err != nil || a.Version != "1.1.0" || strings.Join(a.Needs, ",") != manifest.Root {
		t.Fatalf("Check = %+v, %v; want 1.1.0 needing the root", a, err)
	}
	a, sent, err := c.Push(t.Context(), b)
	if err != nil || a.Result != Installed || a.Version != "1.1.0" || sent != int64(len(r.Root)) {
		t.Fatalf("Push = %+v, %d bytes, %v; want 1.1.0 installed after sending the root's %d bytes", a, sent, err, len(r.Root))
	}
	st, err := c.Status(t.Context(), true)
	if err != nil || st.Testing == nil || st.Testing.Version != "1.1.0" || !strings.Contains(st.Log, "installing 1.1.0") {
		t.Errorf("Status = %+v, %v; want 1.1.0 testing, with the log", st, err)
	}
	// Pushed again: the device waits for the test boot.
	if a, _, err := c.Push(t.Context(), b); err == nil || a == nil || a.Result != Refused {
		t.Errorf("second Push = %+v, %v; want refused", a, err)
	}
}
