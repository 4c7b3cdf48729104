package update

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/testenv"
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
func apiServer(t testing.TB, u *Updater) (srv *httptest.Server, installed <-chan *Manifest) {
	t.Helper()
	ch := make(chan *Manifest, 1)
	mux := http.NewServeMux()
	u.Routes(mux, testAdmin, func(m *Manifest) { ch <- m })
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
func uploadParts(r *fakeRelease, artifacts ...string) []uploadPart {
	parts := []uploadPart{{PartManifest, r.manifest}, {PartSignature, r.sig}}
	for _, a := range artifacts {
		b := map[string][]byte{Root: r.root, Boot: r.boot}[a]
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
func getStatus(t testing.TB, srv *httptest.Server, withLog, admin bool) (int, Status) {
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
	var s Status
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, s
}

func TestAPICheck(t *testing.T) {
	d := newFakeDevice(t)
	srv, _ := apiServer(t, d.updater(2, runningRelease("1.0.0"), nil))
	same := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	newKernel := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0")})
	other, _ := releaseKey(t, 9)
	otherKey := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", key: other})
	otherBoard := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", board: "rpi4"})
	before := d.snapshot()

	for _, tc := range []struct {
		name   string
		parts  []uploadPart
		admin  bool
		code   int
		needs  []string
		errHas string
	}{
		{"same boot", uploadParts(same), true, http.StatusOK, []string{Root}, ""},
		{"new kernel", uploadParts(newKernel), true, http.StatusOK, []string{Root, Boot}, ""},
		{"not the admin", uploadParts(same), false, http.StatusUnauthorized, nil, ""},
		{"no signature part", uploadParts(same)[:1], true, http.StatusForbidden, nil, "not signed"},
		{"other key", uploadParts(otherKey), true, http.StatusForbidden, nil, "trusted release key"},
		{"other board", uploadParts(otherBoard), true, http.StatusUnprocessableEntity, nil, "another board"},
		{"signature first", []uploadPart{{PartSignature, same.sig}, {PartManifest, same.manifest}}, true, http.StatusBadRequest, nil, "starts with"},
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
	d.checkUntouched(before)
	// A refused check is recorded like a refused install.
	if st := d.state(); st.Pending != nil || st.Last == nil || st.Last.Outcome != Refused || !strings.Contains(st.Last.Reason, "another board") ||
		!strings.HasPrefix(st.Last.Source, "push from ") {
		t.Errorf("state after the checks: pending %+v, last %+v; want the last refusal", st.Pending, st.Last)
	}
}

func TestAPIInstall(t *testing.T) {
	d := newFakeDevice(t)
	srv, installed := apiServer(t, d.updater(2, runningRelease("1.0.0"), nil))
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0")})

	// Not the admin: nothing happens.
	before := d.snapshot()
	if code, _ := postUpload(t, srv, "/api/update", false, uploadParts(r, Root, Boot)...); code != http.StatusUnauthorized {
		t.Errorf("anonymous install: status %d, want 401", code)
	}
	d.checkUntouched(before)

	code, a := postUpload(t, srv, "/api/update", true, uploadParts(r, Root, Boot)...)
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
	if !bytes.Equal(d.bootFile("vmlinuz"), kernelOf("1.1.0")) {
		t.Error("the boot partition does not have the new kernel")
	}
	if p := d.state().Pending; p == nil || p.Version != "1.1.0" || !strings.HasPrefix(p.Source, "push from 127.0.0.1:") {
		t.Errorf("pending %+v, want 1.1.0 pushed from loopback", p)
	}

	code, st := getStatus(t, srv, true, true)
	if code != http.StatusOK || st.Testing == nil || st.Testing.Version != "1.1.0" || st.Version != "1.0.0" || st.Partition != 2 {
		t.Errorf("GET /api/update?log=1: %d %+v", code, st)
	}
	for _, line := range []string{"installing 1.1.0", fmt.Sprintf("root: %d bytes received and checked", len(r.root)), "boot partition written", "1.1.0 written to partition 3"} {
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
	r2 := d.release(t.TempDir(), relSpec{version: "1.2.0", minVersion: "1.0.0"})
	if code, a := postUpload(t, srv, "/api/update", true, uploadParts(r2, Root)...); code != http.StatusConflict || a.Result != Refused {
		t.Errorf("install during the test boot: %d %+v, want 409 refused", code, a)
	}
	wrong := d.release(t.TempDir(), relSpec{version: "1.2.0", minVersion: "1.0.0", board: "rpi4"})
	if code, _ := postUpload(t, srv, "/api/update/check", true, uploadParts(wrong)...); code != http.StatusUnprocessableEntity {
		t.Errorf("check of another board's release: %d, want 422", code)
	}
	if p := d.state().Pending; p == nil || p.Version != "1.1.0" {
		t.Errorf("pending %+v, want 1.1.0 still", p)
	}
}

func TestAPIInstallRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parts  func(*fakeRelease) []uploadPart
		code   int
		result string
		errHas string
	}{
		{"no signature part", func(r *fakeRelease) []uploadPart {
			return []uploadPart{{PartManifest, r.manifest}, {Root, r.root}}
		}, http.StatusForbidden, Refused, "not signed"},
		{"empty signature", func(r *fakeRelease) []uploadPart {
			return []uploadPart{{PartManifest, r.manifest}, {PartSignature, nil}, {Root, r.root}}
		}, http.StatusForbidden, Refused, "not signed"},
		{"tampered root", func(r *fakeRelease) []uploadPart {
			root := bytes.Clone(r.root)
			root[12345] ^= 0x80
			return []uploadPart{{PartManifest, r.manifest}, {PartSignature, r.sig}, {Root, root}}
		}, http.StatusUnprocessableEntity, Refused, "SHA-256"},
		{"boot before root", func(r *fakeRelease) []uploadPart { return uploadParts(r, Boot, Root) }, http.StatusBadRequest, Refused, `next part is "boot", the device needs "root"`},
		{"no root", func(r *fakeRelease) []uploadPart { return uploadParts(r) }, http.StatusBadRequest, Refused, "no root part"},
		{"no boot", func(r *fakeRelease) []uploadPart { return uploadParts(r, Root) }, http.StatusBadRequest, Refused, "no boot part"},
		{"signature first", func(r *fakeRelease) []uploadPart {
			return []uploadPart{{PartSignature, r.sig}, {PartManifest, r.manifest}, {Root, r.root}}
		}, http.StatusBadRequest, Refused, `starts with "signature"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDevice(t)
			srv, installed := apiServer(t, d.updater(2, runningRelease("1.0.0"), nil))
			r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0", kernel: kernelOf("1.1.0")})
			before := d.snapshot()
			code, a := postUpload(t, srv, "/api/update", true, tc.parts(r)...)
			if code != tc.code || a.Result != tc.result || !strings.Contains(a.Error, tc.errHas) {
				t.Errorf("status %d, answer %+v; want %d %s with %q", code, a, tc.code, tc.result, tc.errHas)
			}
			d.checkUntouched(before)
			select {
			case m := <-installed:
				t.Errorf("installed called with %s", m.Version)
			default:
			}
			if st := d.state(); st.Pending != nil {
				t.Errorf("pending %+v after a refused upload", st.Pending)
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Window
		str  string
	}{
		{"", Window{}, ""},
		{"02:00-05:00", Window{120, 300}, "02:00-05:00"},
		{" 22:30 - 01:15 ", Window{1350, 75}, "22:30-01:15"},
		{"00:00-06:00", Window{0, 360}, "00:00-06:00"},
		{"23:59-00:00", Window{1439, 0}, "23:59-00:00"},
	} {
		w, err := ParseWindow(tc.in)
		if err != nil || w != tc.want || w.String() != tc.str {
			t.Errorf("ParseWindow(%q) = %+v (%q), %v; want %+v (%q)", tc.in, w, w.String(), err, tc.want, tc.str)
		}
	}
	for _, in := range []string{"02:00", "02:00-02:00", "25:00-03:00", "02:60-03:00", "2-3", "02:00-05:00-06:00", "-", "02:00-", "x"} {
		if w, err := ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q) = %+v, want an error", in, w)
		}
	}
}

func TestWindowNext(t *testing.T) {
	at := func(day, h, m int) time.Time { return time.Date(2025, 6, day, h, m, 0, 0, time.UTC) }
	night := Window{From: 2 * 60, To: 5 * 60}
	wrap := Window{From: 22 * 60, To: 2 * 60}
	for _, tc := range []struct {
		name string
		w    Window
		t    time.Time
		want time.Time
	}{
		{"whole day", Window{}, at(1, 13, 7), at(1, 13, 7)},
		{"inside", night, at(1, 3, 30), at(1, 3, 30)},
		{"at the start", night, at(1, 2, 0), at(1, 2, 0)},
		{"before", night, at(1, 1, 59), at(1, 2, 0)},
		{"at the end", night, at(1, 5, 0), at(2, 2, 0)},
		{"after", night, at(1, 18, 0), at(2, 2, 0)},
		{"after, last day of the month", night, time.Date(2025, 6, 30, 23, 0, 0, 0, time.UTC), time.Date(2025, 7, 1, 2, 0, 0, 0, time.UTC)},
		{"wrapping, late", wrap, at(1, 23, 0), at(1, 23, 0)},
		{"wrapping, early", wrap, at(1, 1, 0), at(1, 1, 0)},
		{"wrapping, at the end", wrap, at(1, 2, 0), at(1, 22, 0)},
		{"wrapping, midday", wrap, at(1, 12, 0), at(1, 22, 0)},
		{"other time zone", night, time.Date(2025, 6, 1, 5, 30, 0, 0, time.FixedZone("CEST", 2*3600)), at(1, 3, 30)},
		{"other time zone, outside", night, time.Date(2025, 6, 1, 9, 0, 0, 0, time.FixedZone("CEST", 2*3600)), at(2, 2, 0)},
	} {
		if got := tc.w.Next(tc.t); !got.Equal(tc.want) {
			t.Errorf("%s: %v.Next(%v) = %v, want %v", tc.name, tc.w, tc.t, got, tc.want)
		}
	}
}

// releaseServer serves release bundles at /stable/<devBoard>/ from the
// folder set with serve, and counts the requests by file name.
type releaseServer struct {
	*httptest.Server
	dir atomic.Pointer[string]
	mu  sync.Mutex
	got map[string]int
}

func newReleaseServer(t testing.TB) *releaseServer {
	t.Helper()
	s := &releaseServer{got: map[string]int{}}
	prefix := "/stable/" + devBoard + "/"
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok || strings.Contains(name, "/") || s.dir.Load() == nil {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.got[name]++
		s.mu.Unlock()
		http.ServeFile(w, r, filepath.Join(*s.dir.Load(), name))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *releaseServer) serve(dir string) { s.dir.Store(&dir) }

func (s *releaseServer) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[name]
}

// runPull runs u.Pull against s until it returns or the test ends, and
// returns a channel of what it installed and a stop function that waits
// for it.
func runPull(t testing.TB, u *Updater, s *releaseServer) (installed <-chan *Manifest, stop func()) {
	t.Helper()
	ch := make(chan *Manifest, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.Pull(ctx, PullConfig{URL: s.URL + "/", Interval: 20 * time.Millisecond, Client: s.Client(),
			Installed: func(m *Manifest) { ch <- m }})
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Pull did not return")
		}
	}
	t.Cleanup(stop)
	return ch, stop
}

// realClock makes an updater use the real clock (Pull's timers do).
func realClock(o *Options) { o.Now = time.Now }

func TestPullInstallsNewer(t *testing.T) {
	d := newFakeDevice(t)
	s := newReleaseServer(t)
	r := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	s.serve(r.dir)
	u := d.updater(2, runningRelease("1.0.0"), realClock)
	installed, _ := runPull(t, u, s)
	select {
	case m := <-installed:
		if m.Version != "1.1.0" {
			t.Errorf("installed %s, want 1.1.0", m.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing installed")
	}
	base := s.URL + "/stable/" + devBoard + "/"
	if p := d.state().Pending; p == nil || p.Version != "1.1.0" || p.Source != "pull from "+base || p.Partition != 3 {
		t.Errorf("pending %+v, want 1.1.0 pulled from %s", p, base)
	}
	if p3 := d.snapshot()[2]; !bytes.Equal(p3[:len(r.root)], r.root) {
		t.Error("partition 3 does not hold the root artifact")
	}
	for name, want := range map[string]int{ManifestFile: 1, SignatureFile: 1, "root.img": 1, "boot.img": 0} {
		if got := s.count(name); got != want {
			t.Errorf("%s requested %d times, want %d", name, got, want)
		}
	}
	if st := u.Status(false); st.URL != base || st.CheckErr != "" || st.LastCheck.IsZero() || st.NextCheck.IsZero() {
		t.Errorf("Status = %+v", st)
	}
}

func TestPullUpToDate(t *testing.T) {
	d := newFakeDevice(t)
	s := newReleaseServer(t)
	s.serve(d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"}).dir)
	u := d.updater(2, runningRelease("1.1.0"), realClock)
	before := d.snapshot()
	installed, stop := runPull(t, u, s)
	testenv.WaitFor(t, 10*time.Second, "three checks", func() bool { return s.count(ManifestFile) >= 3 })
	stop()
	select {
	case m := <-installed:
		t.Errorf("installed %s over the same version", m.Version)
	default:
	}
	if n := s.count("root.img") + s.count("boot.img"); n != 0 {
		t.Errorf("%d artifact requests, want none", n)
	}
	d.checkUntouched(before)
	if st := u.Status(false); st.CheckErr != "" || st.LastCheck.IsZero() || st.Last != nil {
		t.Errorf("Status = %+v, want a clean check", st)
	}
}

func TestPullRefusedNotRetried(t *testing.T) {
	d := newFakeDevice(t)
	s := newReleaseServer(t)
	bad := d.release(t.TempDir(), relSpec{version: "1.1.0", minVersion: "1.0.0"})
	tampered := bytes.Clone(bad.root)
	tampered[0] ^= 1
	if err := os.WriteFile(filepath.Join(bad.dir, "root.img"), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	s.serve(bad.dir)
	u := d.updater(2, runningRelease("1.0.0"), realClock)
	before := d.snapshot()
	installed, _ := runPull(t, u, s)
	testenv.WaitFor(t, 10*time.Second, "the refusal and two more checks", func() bool { return s.count(ManifestFile) >= 3 })
	if n := s.count("root.img"); n != 1 {
		t.Errorf("the refused root was requested %d times, want once", n)
	}
	d.checkUntouched(before)
	if st := d.state(); st.Last == nil || st.Last.Outcome != Refused || st.Last.Version != "1.1.0" {
		t.Errorf("last %+v, want 1.1.0 refused", st.Last)
	}
	if st := u.Status(false); !strings.Contains(st.CheckErr, "1.1.0 was refused here") {
		t.Errorf("Status.CheckErr = %q", st.CheckErr)
	}

	// A newer release is tried.
	s.serve(d.release(t.TempDir(), relSpec{version: "1.1.1", minVersion: "1.0.0"}).dir)
	select {
	case m := <-installed:
		if m.Version != "1.1.1" {
			t.Errorf("installed %s, want 1.1.1", m.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the newer release was not installed")
	}
}
