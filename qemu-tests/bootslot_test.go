package qemutests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/profile"
	"github.com/pc2/pc2/appliance/release"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update"
	"github.com/pc2/pc2/appliance/update/manifest"
	"github.com/pc2/pc2/appliance/update/updateapi"
	"github.com/pc2/pc2/boards/qemu"
	"github.com/pc2/pc2/image/fat16"
	"github.com/pc2/pc2/internal/testing/cloudtest"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/qemu-tests/qemutest"
)

// TestUpdateBootKilled: updates that change the kernel (its bytes and its
// command line, which carries a marker per release: pc2.test=e, =f) with
// the VM killed, like a power cut, at each step; every time it comes back
// on a working version, running that version's own kernel:
//
//  1. killed as the new boot slot is written (right after the root): A,
//     or E if the kill came after the selection (both are whole);
//  2. killed as E's kernel starts, before its init selects the old slot
//     again: the next start tests E again, which commits;
//  3. F over E, killed during F's test boot after its init selected E's
//     slot again: E with E's kernel, F recorded as rolled back;
//  4. G, found on the update server by the owner's "Check for updates
//     now" on the dashboard (the settings say manual) and installed by its
//     "Install" button, the progress shown there; committed, then killed
//     after the commit: G with G's kernel.
func TestUpdateBootKilled(t *testing.T) {
	board := qemu.Board
	qemutest.RequireArch(t, board.GOARCH)
	sn, guestAddr := hostSupernode(t)
	hostRelay(t, sn)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	hash, err := password.Hash(testAdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	// The update server: G appears at /stable/qemu/ in step 4.
	serverRoot := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(serverRoot))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	st := &settings.Settings{Profile: profile.Personal, Hostname: "pc2-boot", Supernodes: []string{guestAddr},
		AdminPasswordHash: hash, Update: &settings.Update{URL: fmt.Sprintf("http://10.0.2.2:%d/", ln.Addr().(*net.TCPAddr).Port),
			Manual: true, HealthTimeout: config.Duration(60 * time.Second)}}
	a := buildRelease(t, board, key, "1.0.0", t.TempDir(), st, nil)
	e := bootChanging(t, buildRelease(t, board, key, "1.1.0", t.TempDir(), nil, nil), key, "e")
	f := bootChanging(t, buildRelease(t, board, key, "1.2.0", t.TempDir(), nil, nil), key, "f")
	g := bootChanging(t, buildRelease(t, board, key, "1.3.0", t.TempDir(), nil, nil), key, "g")

	img := qemutest.CopyImage(t, a.Image)
	var vm *qemutest.VM
	var client *updateapi.Client
	boot := func() {
		t.Helper()
		vm = qemutest.Boot(t, img, qemutest.Options{Forward: []int{4200}, Writable: true, FollowReboots: true})
		client = &updateapi.Client{Base: fmt.Sprintf("http://127.0.0.1:%d", vm.HostPort(4200)), Password: testAdminPassword,
			HTTP: &http.Client{Timeout: 5 * time.Minute}}
	}
	status := func() *update.Status {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := client.Status(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// working waits for the node online and returns its version, checking
	// that the kernel of the last start had that version's marker.
	markers := map[string]string{"1.0.0": "", "1.1.0": "e", "1.2.0": "f", "1.3.0": "g"}
	working := func(step string) string {
		t.Helper()
		waitOnline(t, vm, 3*time.Minute)
		s := status()
		want, ok := markers[s.Version]
		if !ok || s.Testing != nil {
			t.Fatalf("%s: status %+v", step, s)
		}
		if got := lastMarker(t, vm.Serial()); got != want {
			t.Fatalf("%s: %s runs with the kernel of marker %q, want %q", step, s.Version, got, want)
		}
		t.Logf("%s: back on %s with its own kernel; last result %+v", step, s.Version, s.Last)
		return s.Version
	}
	// push sends a bundle without waiting for the outcome.
	push := func(dir string) {
		t.Helper()
		b, err := updateapi.OpenBundle(dir)
		if err != nil {
			t.Fatal(err)
		}
		go client.Push(context.Background(), b)
	}
	// killWhen kills the VM once cond holds.
	killWhen := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("waiting to kill %s\n%s", what, vm.Serial())
			}
		}
		vm.Stop()
		t.Logf("killed: %s", what)
	}
	logHas := func(s string) func() bool {
		return func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			st, err := client.Status(ctx, true)
			return err == nil && strings.Contains(st.Log, s)
		}
	}
	// serialHas matches the console output from now on.
	serialHas := func(re string) func() bool {
		r := regexp.MustCompile(re)
		from := len(vm.Serial())
		return func() bool { return r.MatchString(vm.Serial()[from:]) }
	}

	boot()
	working("A")
	// The owner: the wizard keeps the provisioned identity.
	owner := cloudtest.New(t, client.Base, &http.Client{Timeout: 2 * time.Minute})
	owner.Step("keep", nil)
	owner.Password("owner password 1")
	owner.Step("skip", nil)

	// 1. As the boot slot is written.
	push(e)
	killWhen("E's root written, its boot slot next", logHas("root written to partition 3"))
	boot()
	v := working("1 (killed as the slot was written)")
	if s := status(); v == "1.0.0" && (s.Last == nil || s.Last.Version != "1.1.0" || s.Last.Outcome != update.Failed || !strings.Contains(s.Last.Reason, "interrupted")) {
		t.Fatalf("1: last %+v, want 1.1.0 failed, interrupted", s.Last)
	}

	// 2. As E's kernel starts, before its init runs.
	if v == "1.0.0" {
		started := serialHas(`Command line: .*pc2\.test=e`)
		push(e)
		killWhen("E's kernel starting", started)
		boot()
		waitStatusUpdate(t, client, "1.1.0", update.Installed)
		if v = working("2 (killed as the new kernel started)"); v != "1.1.0" {
			t.Fatalf("2: on %s, want E committed by its repeated test boot", v)
		}
	} else {
		t.Log("2: skipped, the kill of step 1 came after the selection and E committed")
	}

	// 3. F's test boot, after its init selected E's slot again.
	selectedOld := serialHas(`test boot: the next start returns to the old version`)
	push(f)
	killWhen("F's test boot, the old slot selected again", selectedOld)
	boot()
	if v := working("3 (killed during the test boot)"); v != "1.1.0" {
		t.Fatalf("3: on %s, want E", v)
	}
	if s := status(); s.Last == nil || s.Last.Version != "1.2.0" || s.Last.Outcome != update.RolledBack {
		t.Fatalf("3: last %+v, want 1.2.0 rolled back", s.Last)
	}

	// 4. G from the dashboard, committed, then killed.
	if err := os.CopyFS(filepath.Join(serverRoot, "stable", board.Name), os.DirFS(g)); err != nil {
		t.Fatal(err)
	}
	owner.Base = client.Base
	csrf := owner.CSRF("/_/")
	if r := owner.Post("/_/update/check", url.Values{"csrf": {csrf}}); r.Code != http.StatusSeeOther || !strings.Contains(r.Location(), "1.3.0") {
		t.Fatalf("4: check for updates: %d %s %s", r.Code, r.Location(), r.Err())
	}
	if r := owner.Get("/_/"); !strings.Contains(r.Body, "Install version 1.3.0 now") {
		t.Fatalf("4: the dashboard does not offer 1.3.0")
	}
	if r := owner.Post("/_/update/install", url.Values{"csrf": {csrf}}); r.Code != http.StatusSeeOther || strings.Contains(r.Location(), "err=") {
		t.Fatalf("4: install: %d %s", r.Code, r.Location())
	}
	progress := map[string]bool{}
	progressRe := regexp.MustCompile(`Installing 1\.3\.0: ([a-z ]+[a-z0-9])`)
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		// Not owner.Get: the device goes away when it reboots.
		resp, err := owner.C.Get(owner.Base + "/_/")
		if err != nil {
			break // rebooting
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			break
		}
		m := progressRe.FindStringSubmatch(string(body))
		if m == nil {
			if len(progress) > 0 {
				break // written
			}
			continue
		}
		progress[m[1]] = true
	}
	t.Logf("4: progress shown on the dashboard: %v", slices.Sorted(maps.Keys(progress)))
	if !progress["receiving the root"] {
		t.Errorf("4: the dashboard never showed the root being received: %v", progress)
	}
	waitStatusUpdate(t, client, "1.3.0", update.Installed)
	if v := working("4 (G from the dashboard, committed)"); v != "1.3.0" {
		t.Fatalf("4: on %s, want G", v)
	}
	if s := status(); s.Last == nil || !strings.HasPrefix(s.Last.Source, "pull") {
		t.Errorf("4: last %+v, want pulled", s.Last)
	}
	vm.Stop()
	boot()
	if v := working("4 (killed after the commit)"); v != "1.3.0" {
		t.Fatalf("4: on %s after the kill, want G", v)
	}
}

// waitStatusUpdate waits until the last result is outcome for version
// (the device may still be starting).
func waitStatusUpdate(t *testing.T, client *updateapi.Client, version, outcome string) {
	t.Helper()
	var s *update.Status
	for end := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := client.Status(ctx, true)
		cancel()
		if err == nil {
			s = got
			if s.Last != nil && s.Last.Version == version && s.Last.Outcome == outcome && s.Testing == nil {
				return
			}
		}
		if time.Now().After(end) {
			t.Fatalf("no %s of %s: %+v, %v", outcome, version, s, err)
		}
	}
}

// lastMarker returns the pc2.test= marker on the kernel command line of
// the last start on the console ("" for none).
func lastMarker(t *testing.T, serial string) string {
	t.Helper()
	lines := regexp.MustCompile(`Command line: (.*)`).FindAllStringSubmatch(serial, -1)
	if len(lines) == 0 {
		t.Fatal("no kernel command line on the console")
	}
	m := regexp.MustCompile(`\bpc2\.test=(\w+)`).FindStringSubmatch(lines[len(lines)-1][1])
	if m == nil {
		return ""
	}
	return m[1]
}

// bootChanging returns a copy of res's bundle whose boot slot differs from
// every other release's, as a new kernel would: the kernel file grows by
// 64 KiB of zeros and a marker (an x86 kernel ignores what follows its
// image), and its command line carries pc2.test=<marker>. The manifest is
// described and signed again with key.
func bootChanging(t *testing.T, res *release.Result, key ed25519.PrivateKey, marker string) string {
	t.Helper()
	dir := copyBundle(t, res.Dir)
	p := filepath.Join(dir, release.BootFile)
	vol, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	size, err := fat16.Size(vol)
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.Truncate(size); err != nil {
		t.Fatal(err)
	}
	kernel, err := fat16.ReadFile(vol, "a/vmlinuz")
	if err != nil {
		t.Fatal(err)
	}
	kernel = append(append(kernel, make([]byte, 64<<10)...), "pc2 test kernel "+marker...)
	if err := fat16.Replace(vol, "a/vmlinuz", kernel); err != nil {
		t.Fatal(err)
	}
	cmdline, err := fat16.ReadFile(vol, "a/cmdline.txt")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cmdline), "\n", " pc2.test="+marker+"\n", 1)[:len(cmdline)]
	if err := fat16.Rewrite(vol, "a/cmdline.txt", []byte(edited)); err != nil {
		t.Fatal(err)
	}
	files, err := manifest.BootPayload(vol, "")
	if err != nil {
		t.Fatal(err)
	}
	// Trimmed as pc2 release writes it.
	whole, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := len(whole)
	for n >= 4096 && !bytes.ContainsFunc(whole[n-4096:n], func(r rune) bool { return r != 0 }) {
		n -= 4096
	}
	if err := os.WriteFile(p, whole[:n], 0o644); err != nil {
		t.Fatal(err)
	}
	art, err := manifest.Describe(p)
	if err != nil {
		t.Fatal(err)
	}
	art.File, art.Files = res.Manifest.Artifacts[manifest.Boot].File, files
	m := *res.Manifest
	m.Artifacts = maps.Clone(m.Artifacts)
	m.Artifacts[manifest.Boot] = art
	raw, sig, err := manifest.Sign(&m, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{manifest.ManifestFile: raw, manifest.SignatureFile: sig} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
