package pull

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/internal/testing/testenv"
	"github.com/pc2/pc2/internal/testing/updatetest"
)

// TestWindowString writes a window the way the settings have it
// (settings.ParseWindow reads it).
func TestWindowString(t *testing.T) {
	for _, tc := range []struct {
		w   Window
		str string
	}{
		{Window{}, ""},
		{Window{120, 300}, "02:00-05:00"},
		{Window{1350, 75}, "22:30-01:15"},
		{Window{0, 360}, "00:00-06:00"},
		{Window{1439, 0}, "23:59-00:00"},
	} {
		if got := tc.w.String(); got != tc.str {
			t.Errorf("%+v.String() = %q, want %q", tc.w, got, tc.str)
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

// releaseServer serves release bundles at /stable/<updatetest.Board>/ from the
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
	prefix := "/stable/" + updatetest.Board + "/"
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

// runPull runs Run against s until it returns or the test ends, and
// returns a channel of what it installed and a stop function that waits
// for it.
func runPull(t testing.TB, u *update.Updater, s *releaseServer) (installed <-chan *manifest.Manifest, stop func()) {
	t.Helper()
	ch := make(chan *manifest.Manifest, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, u, Config{URL: s.URL + "/", Interval: 20 * time.Millisecond, Client: s.Client(),
			Installed: func(m *manifest.Manifest) { ch <- m }, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
	}
	t.Cleanup(stop)
	return ch, stop
}

func TestPullInstallsNewer(t *testing.T) {
	d := updatetest.NewDevice(t)
	s := newReleaseServer(t)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	s.serve(r.Dir)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	installed, _ := runPull(t, u, s)
	select {
	case m := <-installed:
		if m.Version != "1.1.0" {
			t.Errorf("installed %s, want 1.1.0", m.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing installed")
	}
	base := s.URL + "/stable/" + updatetest.Board + "/"
	if p := d.State().Pending; p == nil || p.Version != "1.1.0" || p.Source != "pull from "+base || p.Partition != 3 {
		t.Errorf("pending %+v, want 1.1.0 pulled from %s", p, base)
	}
	if p3 := d.Snapshot()[2]; !bytes.Equal(p3[:len(r.Root)], r.Root) {
		t.Error("partition 3 does not hold the root artifact")
	}
	for name, want := range map[string]int{manifest.ManifestFile: 1, manifest.SignatureFile: 1, "root.img": 1, "boot.img": 0} {
		if got := s.count(name); got != want {
			t.Errorf("%s requested %d times, want %d", name, got, want)
		}
	}
	if st := u.Status(false); st.URL != base || st.CheckErr != "" || st.LastCheck.IsZero() || st.NextCheck.IsZero() {
		t.Errorf("Status = %+v", st)
	}
}

func TestPullUpToDate(t *testing.T) {
	d := updatetest.NewDevice(t)
	s := newReleaseServer(t)
	s.serve(d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"}).Dir)
	u := d.Updater(2, updatetest.RunningRelease("1.1.0"), nil)
	before := d.Snapshot()
	installed, stop := runPull(t, u, s)
	testenv.WaitFor(t, 10*time.Second, "three checks", func() bool { return s.count(manifest.ManifestFile) >= 3 })
	stop()
	select {
	case m := <-installed:
		t.Errorf("installed %s over the same version", m.Version)
	default:
	}
	if n := s.count("root.img") + s.count("boot.img"); n != 0 {
		t.Errorf("%d artifact requests, want none", n)
	}
	d.CheckUntouched(before)
	if st := u.Status(false); st.CheckErr != "" || st.LastCheck.IsZero() || st.Last != nil {
		t.Errorf("Status = %+v, want a clean check", st)
	}
}

func TestPullRefusedNotRetried(t *testing.T) {
	d := updatetest.NewDevice(t)
	s := newReleaseServer(t)
	bad := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	tampered := bytes.Clone(bad.Root)
	tampered[0] ^= 1
	if err := os.WriteFile(filepath.Join(bad.Dir, "root.img"), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	s.serve(bad.Dir)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	before := d.Snapshot()
	installed, _ := runPull(t, u, s)
	testenv.WaitFor(t, 10*time.Second, "the refusal and two more checks", func() bool { return s.count(manifest.ManifestFile) >= 3 })
	if n := s.count("root.img"); n != 1 {
		t.Errorf("the refused root was requested %d times, want once", n)
	}
	d.CheckUntouched(before)
	if st := d.State(); st.Last == nil || st.Last.Outcome != update.Refused || st.Last.Version != "1.1.0" {
		t.Errorf("last %+v, want 1.1.0 refused", st.Last)
	}
	if st := u.Status(false); !strings.Contains(st.CheckErr, "1.1.0 was refused here") {
		t.Errorf("Status.CheckErr = %q", st.CheckErr)
	}

	// A newer release is tried.
	s.serve(d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.1", MinVersion: "1.0.0"}).Dir)
	select {
	case m := <-installed:
		if m.Version != "1.1.1" {
			t.Errorf("installed %s, want 1.1.1", m.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the newer release was not installed")
	}
}

// TestPullManual: set to manual, the periodic checks only show the newer
// release; the owner's Install (the dashboard's button) installs it, and
// Check looks at once.
func TestPullManual(t *testing.T) {
	d := updatetest.NewDevice(t)
	s := newReleaseServer(t)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	installed := make(chan *manifest.Manifest, 1)
	p := New(u, Config{URL: s.URL + "/", Interval: 20 * time.Millisecond, Client: s.Client(), Manual: true,
		Installed: func(m *manifest.Manifest) { installed <- m }, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if _, err := p.Install(t.Context()); err == nil {
		t.Fatal("Install before any check found something")
	}
	// Nothing on the server yet: the check says so.
	if v, err := p.Check(t.Context()); err == nil || v != "" || !strings.Contains(u.Status(false).CheckErr, "404") {
		t.Fatalf("Check of an empty server = %q, %v; status %+v", v, err, u.Status(false).PullStatus)
	}
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	s.serve(r.Dir)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	testenv.WaitFor(t, 10*time.Second, "three checks", func() bool { return s.count(manifest.ManifestFile) >= 3 })
	cancel()
	<-done
	if st := u.Status(false); st.Available != "1.1.0" || st.CheckErr != "" || st.Testing != nil {
		t.Fatalf("after the manual checks: %+v, want 1.1.0 available, nothing installed", st.PullStatus)
	}
	if n := s.count("root.img"); n != 0 {
		t.Fatalf("the manual checks fetched the root %d times", n)
	}
	if v, err := p.Check(t.Context()); err != nil || v != "1.1.0" {
		t.Fatalf("Check = %q, %v; want 1.1.0", v, err)
	}
	m, err := p.Install(t.Context())
	if err != nil || m.Version != "1.1.0" {
		t.Fatalf("Install = %+v, %v", m, err)
	}
	if got := <-installed; got.Version != "1.1.0" {
		t.Errorf("Installed called with %s", got.Version)
	}
	if st := u.Status(false); st.Available != "" || st.Testing == nil || st.Testing.Version != "1.1.0" {
		t.Errorf("after Install: %+v", st)
	}
	if _, err := p.Install(t.Context()); err == nil {
		t.Error("a second Install succeeded without a check")
	}
}

// TestPullStalledArtifact: a server that stops sending mid-artifact ends
// the install with an error after the idle timeout, and the updater is
// free for the next one (it used to hold its one install until a
// restart).
func TestPullStalledArtifact(t *testing.T) {
	d := updatetest.NewDevice(t)
	r := d.Release(t.TempDir(), updatetest.RelSpec{Version: "1.1.0", MinVersion: "1.0.0"})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	prefix := "/stable/" + updatetest.Board + "/"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(req.URL.Path, prefix)
		if name != "root.img" {
			http.ServeFile(w, req, filepath.Join(r.Dir, name))
			return
		}
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select { // stalls
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	u := d.Updater(2, updatetest.RunningRelease("1.0.0"), nil)
	p := New(u, Config{URL: srv.URL + "/", Client: srv.Client(), IdleTimeout: 300 * time.Millisecond, Manual: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	for i := range 2 {
		if v, err := p.Check(t.Context()); err != nil || v != "1.1.0" {
			t.Fatalf("check %d = %q, %v", i, v, err)
		}
		start := time.Now()
		_, err := p.Install(t.Context())
		if err == nil || errors.Is(err, update.ErrBusy) || !strings.Contains(err.Error(), "nothing received for 300ms") {
			t.Fatalf("install %d from a stalled server: %v", i, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("install %d took %v to give up", i, took)
		}
	}
	if st := u.Status(false); st.Testing != nil || st.Installing != "" {
		t.Errorf("after the stalled installs: %+v", st)
	}
}
